"""The chaos suite: break the running pipeline on purpose and check that it kept its promises."""
