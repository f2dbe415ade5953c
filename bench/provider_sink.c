/*
 * A CPaaS provider fast enough to measure sealpost's sending against: the
 * loopback sink of scripts/bench-send (and of anyone who wants to see what
 * a provider built on libsealpost does per request).
 *
 * Every request is treated as a provider must: the signature is checked over
 * the raw body and the payload decrypted (sp_open, with the key versions of
 * a provider key file), and its webhook-id recorded so a repeat is
 * acknowledged but not counted again. A batch counts as its records (the
 * members of the body's one array), counted by yajl's streaming parser,
 * which validates the whole document (UTF-8 included) without building it:
 * jansson's tree cost 5 µs a 300-byte record, half a core at the rates
 * measured here, on the two cores sealpost is measured on; yajl 0.6 µs. A
 * body that is not JSON gets 400 and is not counted. GET /stats answers the counts as JSON,
 * with the wall-clock time at which the last new record arrived, so that a
 * benchmark can time a run exactly without polling it often (a poll is a
 * process or two on the same two cores as what it measures); anything that
 * fails verification gets 401.
 *
 *   sp_provider_sink KEYFILE PORT_FILE [THREADS]
 *
 * listens on 127.0.0.1 on a free port (plain HTTP, loopback only), writes
 * the port to PORT_FILE once it listens, and stops on SIGTERM or SIGINT.
 * The key file is re-read when it changes (a rotation during a run).
 */
#include <yajl/yajl_parse.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "sealpost/sealpost.h"

#define SINK_MAX_BODY (8u << 20)
#define SINK_SEEN_BITS 22 /* 4M slots: room for a few 100,000-message runs */
#define SINK_MAX_HEADERS 16

typedef struct sink {
    const char *keyfile;
    pthread_mutex_t lock;       /* the seen set and the key file */
    uint64_t *seen;             /* hashes of webhook-ids, 0 = empty */
    size_t seen_mask;
    uint64_t keyfile_gen;       /* bumps when the key file changed */
    struct timespec keyfile_mtime;
    atomic_uint_fast64_t requests, accepted, distinct, repeats, rejected, records;
    atomic_uint_fast64_t last_record_ns; /* CLOCK_REALTIME of the last new record */
} sink;

typedef struct sink_thread {
    sp_wire *wire;
    uint64_t gen;
    uint8_t *plain;
    size_t plain_cap;
} sink_thread;

static pthread_key_t thread_key;

static void thread_free(void *p) {
    sink_thread *t = p;
    if (!t) return;
    sp_wire_free(t->wire);
    free(t->plain);
    free(t);
}

static uint64_t fnv1a(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h ? h : 1;
}

/* true when the id is new */
static bool seen_add(sink *s, const char *id, size_t n) {
    uint64_t h = fnv1a(id, n);
    pthread_mutex_lock(&s->lock);
    size_t i = (size_t)h & s->seen_mask;
    bool fresh = true;
    for (size_t probes = 0; probes <= s->seen_mask; probes++) {
        if (s->seen[i] == 0) {
            s->seen[i] = h;
            break;
        }
        if (s->seen[i] == h) {
            fresh = false;
            break;
        }
        i = (i + 1) & s->seen_mask;
    }
    pthread_mutex_unlock(&s->lock);
    return fresh;
}

/* This thread's wire, rebuilt when the key file changed. */
static sp_error thread_wire(sink *s, sink_thread **out) {
    sink_thread *t = pthread_getspecific(thread_key);
    if (!t) {
        t = calloc(1, sizeof *t);
        if (!t || pthread_setspecific(thread_key, t) != 0) {
            free(t);
            return SP_ERR_NO_MEMORY;
        }
    }
    struct stat st;
    pthread_mutex_lock(&s->lock);
    if (stat(s->keyfile, &st) == 0 &&
        (st.st_mtim.tv_sec != s->keyfile_mtime.tv_sec || st.st_mtim.tv_nsec != s->keyfile_mtime.tv_nsec)) {
        s->keyfile_mtime = st.st_mtim;
        s->keyfile_gen++;
    }
    uint64_t gen = s->keyfile_gen;
    pthread_mutex_unlock(&s->lock);
    if (!t->wire || t->gen != gen) {
        sp_keyfile *kf = NULL;
        sp_wire *w = NULL;
        sp_error rc = sp_keyfile_load(s->keyfile, &kf);
        if (rc == SP_OK) rc = sp_wire_new(&w);
        if (rc == SP_OK) rc = sp_wire_add_keyfile(w, kf);
        sp_keyfile_free(kf);
        if (rc != SP_OK) {
            sp_wire_free(w);
            return rc;
        }
        sp_wire_free(t->wire);
        t->wire = w;
        t->gen = gen;
    }
    *out = t;
    return SP_OK;
}

static void reply(sp_http_request *req, unsigned status, const char *body) {
    if (sp_http_respond(req, status, "application/json", body, strlen(body)) != SP_OK) {
        /* the connection is gone: nothing to tell */
    }
}

/* What the record count needs of the document's structure. */
typedef struct {
    size_t depth;
    bool root_object, in_array;
    size_t top_keys, top_arrays, records;
} record_count;

/* a value: a record when it sits directly in the top-level array */
static void count_value(record_count *c) {
    if (c->in_array && c->depth == 2) c->records++;
}
static int on_scalar(void *arg) {
    count_value(arg);
    return 1;
}
static int on_bool(void *arg, int v) {
    (void)v;
    return on_scalar(arg);
}
static int on_text(void *arg, const char *v, size_t n) {
    (void)v, (void)n;
    return on_scalar(arg);
}
static int on_string(void *arg, const unsigned char *v, size_t n) {
    (void)v, (void)n;
    return on_scalar(arg);
}
static int on_key(void *arg, const unsigned char *v, size_t n) {
    record_count *c = arg;
    (void)v, (void)n;
    if (c->depth == 1) c->top_keys++;
    return 1;
}
static int on_open_map(void *arg) {
    record_count *c = arg;
    count_value(c);
    if (c->depth == 0) c->root_object = true;
    c->depth++;
    return 1;
}
static int on_open_array(void *arg) {
    record_count *c = arg;
    count_value(c);
    if (c->depth == 1 && c->root_object) {
        c->in_array = true;
        c->top_arrays++;
    }
    c->depth++;
    return 1;
}
static int on_close(void *arg) {
    record_count *c = arg;
    c->depth--;
    if (c->depth == 1) c->in_array = false;
    return 1;
}

static const yajl_callbacks count_callbacks = {
    on_scalar, on_bool, NULL, NULL, on_text, on_string, on_open_map, on_key, on_close, on_open_array, on_close,
};

/* The members of the body's one array when it is {"key": [...]}, else 1;
 * false when the body is not JSON. */
static bool count_records(const uint8_t *plain, size_t len, size_t *records) {
    record_count c;
    memset(&c, 0, sizeof c);
    yajl_handle h = yajl_alloc(&count_callbacks, NULL, &c);
    if (h == NULL) return false;
    bool ok = yajl_parse(h, plain, len) == yajl_status_ok && yajl_complete_parse(h) == yajl_status_ok;
    yajl_free(h);
    *records = c.root_object && c.top_keys == 1 && c.top_arrays == 1 ? c.records : 1;
    return ok;
}

static const char *const header_names[] = {"Content-Type", "X-AES-IV", "X-AES-KEY-VERSION", "X-AES-ALGORITHM",
                                           "webhook-id", "webhook-timestamp", "webhook-signature"};

static void on_request(void *arg, sp_http_request *req) {
    sink *s = arg;
    if (strcmp(sp_http_method(req), "GET") == 0 && strcmp(sp_http_path(req), "/stats") == 0) {
        char body[512];
        uint64_t last = atomic_load(&s->last_record_ns);
        snprintf(body, sizeof body,
                 "{\"requests\":%llu,\"accepted\":%llu,\"distinct\":%llu,\"repeats\":%llu,\"rejected\":%llu,"
                 "\"records\":%llu,\"last_record_at\":%llu.%06llu}",
                 (unsigned long long)atomic_load(&s->requests), (unsigned long long)atomic_load(&s->accepted),
                 (unsigned long long)atomic_load(&s->distinct), (unsigned long long)atomic_load(&s->repeats),
                 (unsigned long long)atomic_load(&s->rejected), (unsigned long long)atomic_load(&s->records),
                 (unsigned long long)(last / 1000000000u), (unsigned long long)(last % 1000000000u / 1000u));
        reply(req, 200, body);
        return;
    }
    atomic_fetch_add(&s->requests, 1);
    sp_header headers[SINK_MAX_HEADERS];
    size_t n = 0;
    for (size_t i = 0; i < sizeof header_names / sizeof header_names[0]; i++) {
        const char *v = sp_http_header(req, header_names[i], NULL);
        if (!v) continue;
        headers[n].name = header_names[i];
        headers[n].name_len = strlen(header_names[i]);
        headers[n].value = v;
        headers[n].value_len = strlen(v);
        n++;
    }
    size_t body_len = 0;
    const uint8_t *body = sp_http_body(req, &body_len);
    sink_thread *t = NULL;
    sp_error rc = thread_wire(s, &t);
    if (rc == SP_OK && t->plain_cap < body_len + 1) {
        free(t->plain);
        t->plain_cap = body_len + 1024;
        t->plain = malloc(t->plain_cap);
        if (!t->plain) {
            t->plain_cap = 0;
            rc = SP_ERR_NO_MEMORY;
        }
    }
    size_t plain_len = 0;
    sp_opened info;
    if (rc == SP_OK) rc = sp_open(t->wire, headers, n, body, body_len, 0, t->plain, t->plain_cap, &plain_len, &info);
    if (rc != SP_OK) {
        atomic_fetch_add(&s->rejected, 1);
        reply(req, 401, "{\"error\":\"unauthorized\"}");
        return;
    }
    /* parsed even when a repeat: wrk's reference repeats one request, and
     * must cost what a new one does */
    size_t records = 0;
    if (!count_records(t->plain, plain_len, &records)) {
        sp_wipe(t->plain, plain_len);
        atomic_fetch_add(&s->rejected, 1);
        reply(req, 400, "{\"error\":\"not_json\"}");
        return;
    }
    atomic_fetch_add(&s->accepted, 1);
    if (seen_add(s, info.message_id, strlen(info.message_id))) {
        atomic_fetch_add(&s->distinct, 1);
        atomic_fetch_add(&s->records, records);
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        uint64_t ns = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
        /* the latest wins: requests finish out of order on several threads */
        uint64_t seen_ns = atomic_load(&s->last_record_ns);
        while (seen_ns < ns && !atomic_compare_exchange_weak(&s->last_record_ns, &seen_ns, ns)) {
        }
    } else {
        atomic_fetch_add(&s->repeats, 1);
    }
    sp_wipe(t->plain, plain_len);
    reply(req, 200, "{\"status\":\"accepted\"}");
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: sp_provider_sink KEYFILE PORT_FILE [THREADS]\n");
        return 2;
    }
    unsigned threads = argc > 3 ? (unsigned)strtoul(argv[3], NULL, 10) : 2;
    if (threads < 1 || threads > 64) threads = 2;
    if (sp_init() != SP_OK || pthread_key_create(&thread_key, thread_free) != 0) return 1;
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);

    static sink s;
    s.keyfile = argv[1];
    pthread_mutex_init(&s.lock, NULL);
    s.seen_mask = ((size_t)1 << SINK_SEEN_BITS) - 1;
    s.seen = calloc(s.seen_mask + 1, sizeof *s.seen);
    if (!s.seen) return 1;
    sp_http_config cfg = {
        .bind_address = "127.0.0.1",
        .port = 0,
        .allow_plain_http = true,
        .threads = threads,
        .max_body = SINK_MAX_BODY,
        .max_header_bytes = 16384,
        .max_connections = 4096,
        .max_connections_per_ip = 4096,
        .idle_timeout_s = 60,
    };
    sp_http_handlers handlers = {NULL, on_request, &s};
    sp_http_server *server = NULL;
    sp_error rc = sp_http_server_start(&cfg, &handlers, &server);
    if (rc != SP_OK) {
        fprintf(stderr, "sp_provider_sink: %s\n", sp_strerror(rc));
        return 1;
    }
    FILE *pf = fopen(argv[2], "w");
    if (!pf) return 1;
    fprintf(pf, "%u\n", (unsigned)sp_http_server_port(server));
    fclose(pf);
    int sig = 0;
    while (sigwait(&stop, &sig) != 0) {
    }
    sp_http_server_stop(server, 1000);
    free(s.seen);
    return 0;
}
