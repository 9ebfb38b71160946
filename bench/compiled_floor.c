/*
 * §1's compiled floor: the gantry producer's per-line work in C, with librdkafka (the client under
 * confluent-kafka and kcat), to tell how far a compiled hot path would take the producer.
 *
 * For every line of an xferlog: split it into its 18 fields; keep complete incoming uploads under
 * LOG_ROOT; lstat the file in CACHE_ROOT; encode a FileArrived (the real schema's fields, in its
 * order, behind the header of our codec: HEADER_HEX); produce it keyed by the file's key with the
 * settings of terra-xfer's transactional producer, one transaction per CHUNK lines.
 * What it leaves out (so it is a floor, not a producer): the log's time conversion (logged_ms is
 * null), path normalisation and whitelist rules beyond the LOG_ROOT prefix, dead letters and the
 * checkpoint record of each transaction.
 *
 *   compiled_floor BOOTSTRAP TOPIC TRANSACTIONAL_ID LOG CACHE_ROOT LOG_ROOT SITE CHUNK HEADER_HEX
 *
 * Prints "<events> <seconds> <librdkafka version>": events produced and committed, and the seconds
 * from the first transaction's start to the last one's commit.
 */
#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define FIELDS 18
#define TIMEOUT_MS 60000

typedef struct {
    char *p;
    size_t n, cap;
} buf_t;

static void die(const char *what, const char *detail) {
    fprintf(stderr, "compiled_floor: %s: %s\n", what, detail);
    exit(2);
}

static void die_error(const char *what, rd_kafka_error_t *error) {
    die(what, rd_kafka_error_string(error));
}

static void put(buf_t *b, const void *data, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2;
        b->p = realloc(b->p, b->cap);
        if (b->p == NULL) die("realloc", strerror(errno));
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
}

static void put_long(buf_t *b, int64_t v) {
    uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    unsigned char out[10];
    size_t n = 0;
    while (z & ~(uint64_t)0x7F) {
        out[n++] = (unsigned char)((z & 0x7F) | 0x80);
        z >>= 7;
    }
    out[n++] = (unsigned char)z;
    put(b, out, n);
}

static void put_str(buf_t *b, const char *s, size_t n) {
    put_long(b, (int64_t)n);
    put(b, s, n);
}

static void put_some(buf_t *b, const char *s, size_t n) { /* a ["null", "string"] union's string */
    put_long(b, 1);
    put_str(b, s, n);
}

static void put_fmt(buf_t *b, const char *fmt, ...) { /* a string made by printf */
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    put_str(b, tmp, (size_t)n);
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The path component `index` (0-based) of rel, or an empty one. */
static const char *component(const char *rel, size_t len, int index, size_t *out_len) {
    const char *start = rel, *end = rel + len;
    for (int i = 0; i < index; i++) {
        const char *slash = memchr(start, '/', (size_t)(end - start));
        if (slash == NULL) {
            *out_len = 0;
            return rel;
        }
        start = slash + 1;
    }
    const char *slash = memchr(start, '/', (size_t)(end - start));
    *out_len = (size_t)((slash ? slash : end) - start);
    return start;
}

static unsigned char *unhex(const char *hex, size_t *n) {
    size_t len = strlen(hex) / 2;
    unsigned char *out = malloc(len);
    for (size_t i = 0; i < len; i++) sscanf(hex + 2 * i, "%2hhx", &out[i]);
    *n = len;
    return out;
}

int main(int argc, char **argv) {
    if (argc != 10) die("usage", "BOOTSTRAP TOPIC TXID LOG CACHE_ROOT LOG_ROOT SITE CHUNK HEADER_HEX");
    const char *bootstrap = argv[1], *topic = argv[2], *txid = argv[3], *log_path = argv[4];
    const char *cache_root = argv[5], *log_root = argv[6], *site = argv[7];
    long chunk = atol(argv[8]);
    size_t header_len, root_len = strlen(log_root), site_len = strlen(site);
    unsigned char *header = unhex(argv[9], &header_len);

    FILE *fh = fopen(log_path, "rb");
    if (fh == NULL) die(log_path, strerror(errno));
    fseek(fh, 0, SEEK_END);
    long size = ftell(fh);
    fseek(fh, 0, SEEK_SET);
    char *data = malloc((size_t)size + 1);
    if (fread(data, 1, (size_t)size, fh) != (size_t)size) die(log_path, "short read");
    fclose(fh);

    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *settings[][2] = {
        {"bootstrap.servers", bootstrap}, {"enable.idempotence", "true"}, {"acks", "all"},
        {"partitioner", "murmur2_random"}, {"compression.type", "lz4"}, {"linger.ms", "5"},
        {"batch.size", "1000000"}, {"message.max.bytes", "8388608"},
        {"transactional.id", txid}, {"transaction.timeout.ms", "10000"},
    };
    for (size_t i = 0; i < sizeof settings / sizeof settings[0]; i++)
        if (rd_kafka_conf_set(conf, settings[i][0], settings[i][1], err, sizeof err) != RD_KAFKA_CONF_OK)
            die(settings[i][0], err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (rk == NULL) die("rd_kafka_new", err);
    rd_kafka_error_t *error = rd_kafka_init_transactions(rk, TIMEOUT_MS);
    if (error) die_error("init_transactions", error);

    char path[8192];
    size_t cache_len = strlen(cache_root);
    memcpy(path, cache_root, cache_len);
    buf_t value = {0}, key = {0};
    long events = 0, in_chunk = 0;
    int open = 0;
    double started = seconds();
    int64_t emitted = now_ms();
    char *line = data, *end = data + size;
    while (line < end) {
        char *nl = memchr(line, '\n', (size_t)(end - line));
        char *stop = nl ? nl : end;
        long offset = (long)(line - data);
        const char *f[FIELDS];
        size_t fl[FIELDS];
        int n = 0;
        for (char *c = line; c < stop && n <= FIELDS;) {
            while (c < stop && (*c == ' ' || *c == '\t' || *c == '\r')) c++;
            if (c >= stop) break;
            char *w = c;
            while (c < stop && *c != ' ' && *c != '\t' && *c != '\r') c++;
            if (n < FIELDS) {
                f[n] = w;
                fl[n] = (size_t)(c - w);
            }
            n++;
        }
        line = stop + 1;
        /* fields: 8 filename, 11 direction, 17 completion, 6 host, 13 user */
        if (n != FIELDS || fl[11] != 1 || f[11][0] != 'i' || fl[17] != 1 || f[17][0] != 'c')
            continue;
        if (fl[8] <= root_len + 1 || memcmp(f[8], log_root, root_len) != 0 || f[8][root_len] != '/')
            continue;
        const char *rel = f[8] + root_len + 1;
        size_t rel_len = fl[8] - root_len - 1;
        if (cache_len + 1 + rel_len >= sizeof path) continue;
        path[cache_len] = '/';
        memcpy(path + cache_len + 1, rel, rel_len);
        path[cache_len + 1 + rel_len] = '\0';
        struct stat st;
        if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        int64_t mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;

        key.n = 0;
        put(&key, site, site_len);
        put(&key, "/", 1);
        put(&key, rel, rel_len);
        value.n = 0;
        put(&value, header, header_len);
        put_fmt(&value, "bench:%ld", offset);        /* event_id */
        put_str(&value, key.p, key.n);                           /* key */
        put_fmt(&value, "%lld:%lld", (long long)st.st_size, (long long)mtime_ns); /* version */
        put_str(&value, site, site_len);                         /* site */
        put_str(&value, rel, rel_len);                           /* path */
        put_long(&value, 0);                                     /* raw_path: null */
        size_t cl;
        const char *c;
        c = component(rel, rel_len, 2, &cl);
        put_some(&value, c, cl);                                 /* sensor */
        c = component(rel, rel_len, 3, &cl);
        put_some(&value, c, cl);                                 /* date */
        c = component(rel, rel_len, 4, &cl);
        put_some(&value, c, cl);                                 /* timestamp */
        put_str(&value, rel, rel_len);                           /* dest_path */
        put_long(&value, (int64_t)st.st_size);                   /* size */
        put_long(&value, mtime_ns);                              /* mtime_ns */
        put_long(&value, 0);                                     /* source: XFERLOG */
        put_fmt(&value, "xferlog@%ld", offset);      /* source_ref */
        put_long(&value, 0);                                     /* logged_ms: null */
        put_some(&value, f[6], fl[6]);                           /* remote_host */
        put_some(&value, f[13], fl[13]);                         /* username */
        put_long(&value, emitted);                               /* emitted_ms */
        put_long(&value, 1);                                     /* attempt */
        put_long(&value, 0);                                     /* dataset_metadata: null */
        put_long(&value, 0);                                     /* file_metadata: null */

        if (!open) {
            error = rd_kafka_begin_transaction(rk);
            if (error) die_error("begin_transaction", error);
            open = 1;
        }
        rd_kafka_resp_err_t e;
        while ((e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key.p, key.n),
                                      RD_KAFKA_V_VALUE(value.p, value.n),
                                      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END)) ==
               RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(rk, 10);
        if (e) die("produce", rd_kafka_err2str(e));
        events++;
        if (++in_chunk >= chunk) {
            error = rd_kafka_commit_transaction(rk, TIMEOUT_MS);
            if (error) die_error("commit_transaction", error);
            open = 0;
            in_chunk = 0;
            emitted = now_ms();
        }
    }
    if (open) {
        error = rd_kafka_commit_transaction(rk, TIMEOUT_MS);
        if (error) die_error("commit_transaction", error);
    }
    printf("%ld %.3f %s\n", events, seconds() - started, rd_kafka_version_str());
    rd_kafka_destroy(rk);
    free(data);
    free(value.p);
    free(key.p);
    free(header);
    return 0;
}
