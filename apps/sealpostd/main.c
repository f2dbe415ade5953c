/*
 * sealpostd: the platform's HTTPS gateway.
 *
 *   sealpostd --config FILE                      run until SIGTERM/SIGINT
 *   sealpostd check-config --config FILE         "ok", or the one-line error
 *   sealpostd admin-credential --config FILE [--expires-in SECONDS]
 *
 * Start-up is strict and in a fixed order, each step failing with one line
 * on stderr: config (exit 2 when it is wrong), process hardening (no core
 * dumps, no ptrace), the data directory (0700), the log, the audit log, the
 * server key (DATA/server.key, created on first start; the credential
 * pepper is derived from it with HKDF, so the file must never be replaced
 * or credentials stop working), metrics, the store (migrations run here,
 * once, on the main thread), then the HTTP server. Every signal we handle
 * is blocked before any thread exists and taken with sigwait() here: SIGHUP
 * reopens the log file (rotation), SIGTERM/SIGINT stop accepting, give the
 * requests in flight shutdown_grace to finish, and close everything.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"

#define EXIT_FAIL 1
#define EXIT_USAGE 2

static void usage(FILE *to) {
    fprintf(to,
            "usage: sealpostd --config FILE\n"
            "       sealpostd check-config --config FILE\n"
            "       sealpostd admin-credential --config FILE [--expires-in SECONDS]\n"
            "       sealpostd replay --config FILE --tenant ID [--campaign ID]\n"
            "       sealpostd --version | --help\n"
            "\n"
            "Runs the sealpost gateway (tenants, ingestion, sending) as configured in FILE\n"
            "(see sealpost.conf.example). check-config validates FILE and prints \"ok\".\n"
            "admin-credential creates an admin API credential and prints it once, as JSON.\n"
            "replay puts a tenant's dead-lettered messages (of one campaign, or all of them,\n"
            "test sends included) back in the outbox, attempts reset; a running daemon sends\n"
            "them. It prints how many.\n");
}

static int fail_line(const char *what, sp_error rc) {
    fprintf(stderr, "sealpostd: %s: %s\n", what, sp_strerror(rc));
    return EXIT_FAIL;
}

/* mkdir -p with mode 0700 for what it creates. */
static int make_dirs(const char *path) {
    char buf[SPD_MAX_PATH];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof buf) return -1;
    memcpy(buf, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        char saved = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0700) != 0 && errno != EEXIST) return -1;
        buf[i] = saved;
    }
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : -1;
}

/* Loads DATA/server.key (a sealpost key file, created on first start) and
 * derives the pepper from its active key. */
static sp_error load_pepper(const char *data_dir, sp_key **out, sp_key **secrets_key) {
    char path[SPD_MAX_PATH + 16];
    int n = snprintf(path, sizeof path, "%s/server.key", data_dir);
    if (n < 0 || (size_t)n >= sizeof path) return SP_ERR_TOO_LARGE;
    sp_error rc = sp_keyfile_derive_active(path, "sealpostd", "sealpostd credential pepper v1", out);
    if (rc == SP_OK) rc = sp_keyfile_derive_active(path, "sealpostd", "sealpostd channel secrets v1", secrets_key);
    return rc;
}

typedef struct options {
    const char *command; /* "run", "check-config", "admin-credential" */
    const char *config;
    int64_t expires_in;
    const char *tenant;   /* replay */
    const char *campaign; /* replay */
} options;

static int parse_args(int argc, char **argv, options *o) {
    o->command = "run";
    int first = 1;
    if (argc > 1 && argv[1][0] != '-') {
        if (strcmp(argv[1], "check-config") != 0 && strcmp(argv[1], "admin-credential") != 0 &&
            strcmp(argv[1], "replay") != 0) {
            fprintf(stderr, "sealpostd: unknown command '%s' (see sealpostd --help)\n", argv[1]);
            return EXIT_USAGE;
        }
        o->command = argv[1];
        first = 2;
    }
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"expires-in", required_argument, NULL, 'e'},
        {"tenant", required_argument, NULL, 't'},
        {"campaign", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    optind = first;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'c':
            o->config = optarg;
            break;
        case 'e': {
            size_t digits = strspn(optarg, "0123456789");
            if (strcmp(o->command, "admin-credential") != 0 || digits == 0 || digits > 9 || optarg[digits] != '\0' ||
                strtol(optarg, NULL, 10) > 315360000) {
                fprintf(stderr, "sealpostd: --expires-in: seconds between 0 and 315360000, with admin-credential\n");
                return EXIT_USAGE;
            }
            o->expires_in = strtol(optarg, NULL, 10);
            break;
        }
        case 't':
        case 'p':
            if (strcmp(o->command, "replay") != 0) {
                fprintf(stderr, "sealpostd: --tenant and --campaign go with replay\n");
                return EXIT_USAGE;
            }
            if (c == 't') o->tenant = optarg;
            else o->campaign = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("sealpostd %s\n", SEALPOST_VERSION_STRING);
            return 0;
        default:
            fprintf(stderr, "sealpostd: bad option '%s' (see sealpostd --help)\n", argv[optind - 1]);
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "sealpostd: unexpected argument '%s'\n", argv[optind]);
        return EXIT_USAGE;
    }
    if (!o->config) {
        fprintf(stderr, "sealpostd: --config FILE is required\n");
        return EXIT_USAGE;
    }
    if (strcmp(o->command, "replay") == 0 &&
        (!o->tenant || !spd_tenant_id_valid(o->tenant) || (o->campaign && !spd_name_ok(o->campaign)))) {
        fprintf(stderr, "sealpostd: replay needs --tenant ID (and --campaign ID is 1..64 of a-z 0-9 _ -)\n");
        return EXIT_USAGE;
    }
    return -1;
}

/* Everything both the daemon and admin-credential need: config, hardening,
 * the data directory, the pepper. */
static int prepare(const options *o, spd_app *app) {
    char err[600];
    sp_error rc = spd_config_load(o->config, &app->config, err, sizeof err);
    if (rc != SP_OK) {
        fprintf(stderr, "sealpostd: %s\n", err);
        return EXIT_USAGE;
    }
    if (strcmp(o->command, "check-config") == 0) return -1;
    rc = sp_init();
    if (rc == SP_OK) rc = sp_harden_process();
    if (rc != SP_OK) return fail_line("start-up", rc);
    spd_config *cfg = &app->config;
    if (make_dirs(cfg->data_dir) != 0) {
        fprintf(stderr, "sealpostd: data dir %s: %s\n", cfg->data_dir, strerror(errno));
        return EXIT_FAIL;
    }
    /* Absolute from here on: tenants' default KMS paths are stored. */
    char real[PATH_MAX];
    if (!realpath(cfg->data_dir, real) || strlen(real) >= sizeof cfg->data_dir) {
        fprintf(stderr, "sealpostd: data dir %s: cannot resolve\n", cfg->data_dir);
        return EXIT_FAIL;
    }
    memcpy(cfg->data_dir, real, strlen(real) + 1);
    char kms_dir[SPD_MAX_PATH + 8];
    snprintf(kms_dir, sizeof kms_dir, "%s/kms", cfg->data_dir);
    if (make_dirs(kms_dir) != 0) {
        fprintf(stderr, "sealpostd: %s: %s\n", kms_dir, strerror(errno));
        return EXIT_FAIL;
    }
    rc = load_pepper(cfg->data_dir, &app->pepper, &app->secrets_key);
    if (rc != SP_OK) {
        fprintf(stderr, "sealpostd: server key %s/server.key: %s\n", cfg->data_dir, sp_strerror(rc));
        return EXIT_FAIL;
    }
    return -1;
}

/* Dead-lettered messages back to the queue: the command-line half of
 * POST /v1/campaigns/{id}/replay, which also reaches test sends (no
 * campaign). Audited like an admin action. */
static int replay(spd_app *app, const char *tenant, const char *campaign) {
    sp_store *store = NULL;
    sp_error rc = sp_store_open(app->config.store_url, &store);
    if (rc != SP_OK) return fail_line("store", rc);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t n = 0;
    rc = sp_store_outbox_replay(store, tenant, campaign, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, &n);
    sp_store_close(store);
    /* a running daemon holds the audit log (one writer per chain): then a
     * chain of its own beside it */
    char alt[SPD_MAX_PATH + 32];
    snprintf(alt, sizeof alt, "%s/replay.audit.log", app->config.data_dir);
    if (sp_audit_open(app->config.audit_path, &app->audit) == SP_OK || sp_audit_open(alt, &app->audit) == SP_OK) {
        sp_audit_field fields[] = {{"credential", "local"},
                                   {"tenant", tenant},
                                   {"campaign", campaign ? campaign : ""},
                                   {"result", rc == SP_OK ? "ok" : sp_error_name(rc)}};
        if (sp_audit_record(app->audit, "admin.outbox.replay", fields, 4) != SP_OK)
            fprintf(stderr, "sealpostd: warning: the audit line was not written\n");
        sp_audit_close(app->audit);
        app->audit = NULL;
    } else {
        app->audit = NULL;
        fprintf(stderr, "sealpostd: warning: no audit log can be opened; going on\n");
    }
    if (rc != SP_OK) return fail_line("replay", rc);
    printf("replayed %llu\n", (unsigned long long)n);
    return 0;
}

static int admin_credential(spd_app *app, int64_t expires_in) {
    /* A running daemon holds the audit log's lock (one writer per chain):
     * then the line goes to a chain of its own next to it. */
    sp_error rc = sp_audit_open(app->config.audit_path, &app->audit);
    if (rc != SP_OK) {
        char alt[SPD_MAX_PATH + 32];
        snprintf(alt, sizeof alt, "%s/admin-credential.audit.log", app->config.data_dir);
        rc = sp_audit_open(alt, &app->audit);
        if (rc != SP_OK) {
            app->audit = NULL;
            fprintf(stderr, "sealpostd: warning: no audit log can be opened (%s); going on\n", sp_strerror(rc));
        }
    }
    sp_store *store = NULL;
    rc = sp_store_open(app->config.store_url, &store);
    if (rc != SP_OK) {
        sp_audit_close(app->audit);
        return fail_line("store", rc);
    }
    json_t *out = NULL;
    char err[200] = "";
    rc = sp_store_begin(store);
    if (rc == SP_OK) rc = spd_credential_issue(app, store, "", NULL, expires_in, &out, err, sizeof err);
    if (rc == SP_OK) rc = sp_store_commit(store);
    if (rc != SP_OK) sp_store_rollback(store);
    sp_store_close(store);
    const char *id = out ? json_string_value(json_object_get(out, "id")) : NULL;
    sp_audit_field fields[] = {{"credential", "local"}, {"tenant", ""}, {"result", rc == SP_OK ? "ok" : sp_error_name(rc)},
                               {"target", id ? id : ""}};
    if (app->audit && sp_audit_record(app->audit, "admin.credential.create", fields, id ? 4 : 3) != SP_OK)
        fprintf(stderr, "sealpostd: warning: the audit line was not written\n");
    sp_audit_close(app->audit);
    app->audit = NULL;
    if (rc != SP_OK) {
        json_decref(out);
        return fail_line(err[0] ? err : "admin-credential", rc);
    }
    json_object_del(out, "tenant");
    json_object_del(out, "created");
    char *text = json_dumps(out, JSON_COMPACT);
    json_decref(out);
    if (!text) return fail_line("admin-credential", SP_ERR_NO_MEMORY);
    printf("%s\n", text);
    fflush(stdout);
    json_malloc_t m;
    json_free_t f;
    json_get_alloc_funcs(&m, &f);
    sp_wipe(text, strlen(text));
    if (f)
        f(text);
    else
        free(text);
    return 0;
}

static sp_error counter(spd_app *app, const char *name, const char *help, const char *labels, sp_metric **out) {
    return sp_metrics_get(app->metrics, SP_METRIC_COUNTER, name, help, labels, NULL, 0, out);
}

static sp_error make_metrics(spd_app *app) {
    sp_error rc = sp_metrics_new(&app->metrics);
    if (rc != SP_OK) return rc;
    static const char auth_help[] = "Requests refused for their credential or address";
    sp_metric *queue = NULL;
    if ((rc = counter(app, "sealpost_auth_failures_total", auth_help, "api=\"admin\"", &app->auth_failures_admin)) ||
        (rc = counter(app, "sealpost_auth_failures_total", auth_help, "api=\"tenant\"", &app->auth_failures_tenant)) ||
        (rc = counter(app, "sealpost_rate_limited_total", "Requests refused by a rate limit", NULL,
                      &app->rate_limited)) ||
        (rc = counter(app, "sealpost_profiles_ingested_total", "Profiles created or updated", NULL,
                      &app->profiles_ingested)) ||
        (rc = counter(app, "sealpost_events_ingested_total", "Events stored", NULL, &app->events_ingested)) ||
        (rc = counter(app, "sealpost_events_duplicate_total", "Events received again (same id)", NULL,
                      &app->events_duplicate)) ||
        (rc = counter(app, "sealpost_vault_decrypts_total", "PII values decrypted", NULL, &app->vault_decrypts)) ||
        (rc = counter(app, "sealpost_kms_calls_total", "Calls to tenants' KMSs (wrap, unwrap, generate)", NULL,
                      &app->kms_calls)) ||
        (rc = counter(app, "sealpost_kms_failures_total", "KMS calls that failed, by kind", "kind=\"any\"",
                      &app->kms_failures)) ||
        (rc = counter(app, "sealpost_kms_failures_total", "KMS calls that failed, by kind", "kind=\"unavailable\"",
                      &app->kms_unavailable)) ||
        (rc = counter(app, "sealpost_kms_failures_total", "KMS calls that failed, by kind", "kind=\"denied\"",
                      &app->kms_denied)) ||
        (rc = sp_metrics_get(app->metrics, SP_METRIC_GAUGE, "sealpost_kms_breakers_open",
                             "Tenants' KMSs whose circuit breaker is open now", NULL, NULL, 0,
                             &app->kms_breakers_open)) ||
        (rc = counter(app, "sealpost_messages_total", "Messages by outcome of a send attempt", "outcome=\"sent\"",
                      &app->messages_sent)) ||
        (rc = counter(app, "sealpost_messages_total", "Messages by outcome of a send attempt", "outcome=\"retried\"",
                      &app->messages_retried)) ||
        (rc = counter(app, "sealpost_messages_total", "Messages by outcome of a send attempt", "outcome=\"failed\"",
                      &app->messages_failed)) ||
        (rc = counter(app, "sealpost_messages_total", "Messages by outcome of a send attempt", "outcome=\"dead\"",
                      &app->messages_dead)) ||
        (rc = counter(app, "sealpost_messages_total", "Messages by outcome of a send attempt",
                      "outcome=\"deferred\"", &app->messages_deferred)) ||
        (rc = sp_metrics_get(app->metrics, SP_METRIC_GAUGE, "sealpost_queue_depth", "Messages waiting per queue",
                             "queue=\"outbox\"", NULL, 0, &queue)))
        return rc;
    sp_metric_set(queue, 0);
    app->outbox_depth = queue;
    /* callbacks: every series exists from the start, so a scrape shows 0s */
    static const char *const results[] = SPD_CB_RESULT_NAMES;
    static const char *const events[] = SPD_DELIVERY_EVENT_NAMES;
    static const char *const reasons[] = SPD_SUPPRESS_REASON_NAMES;
    char labels[64];
    for (size_t i = 0; rc == SP_OK && i < sizeof results / sizeof results[0]; i++) {
        snprintf(labels, sizeof labels, "result=\"%s\"", results[i]);
        rc = counter(app, "sealpost_callbacks_total", "Provider callbacks by result", labels,
                     &app->callbacks_result[i]);
    }
    for (size_t i = 0; rc == SP_OK && i < sizeof events / sizeof events[0]; i++) {
        snprintf(labels, sizeof labels, "event=\"%s\"", events[i]);
        rc = counter(app, "sealpost_delivery_events_total", "Callback events that changed a message's tracking",
                     labels, &app->delivery_events[i]);
    }
    for (size_t i = 0; rc == SP_OK && i < sizeof reasons / sizeof reasons[0]; i++) {
        snprintf(labels, sizeof labels, "reason=\"%s\"", reasons[i]);
        rc = counter(app, "sealpost_suppressions_total", "Profiles suppressed by callbacks, by reason", labels,
                     &app->suppressions[i]);
    }
    return rc;
}

static void log_error(const char *event, sp_error rc) {
    sp_log_field f[] = {SP_LOG_S("error", sp_error_name(rc)), SP_LOG_S("message", sp_strerror(rc))};
    sp_log(SP_LOG_ERROR, event, f, 2);
}

static const char *log_target(const spd_config *cfg) {
    return cfg->log_path[0] == '\0' || strcmp(cfg->log_path, "-") == 0 ? NULL : cfg->log_path;
}

static int run(spd_app *app) {
    spd_config *cfg = &app->config;
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGHUP);
    /* before any thread: they all inherit the mask */
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    sp_error rc = sp_log_open(log_target(cfg), cfg->log_level);
    if (rc != SP_OK) return fail_line("log", rc);
    int status = EXIT_FAIL;
    sp_http_server *server = NULL;
    rc = sp_audit_open(cfg->audit_path, &app->audit);
    if (rc != SP_OK) {
        fprintf(stderr, "sealpostd: audit log %s: %s\n", cfg->audit_path, sp_strerror(rc));
        log_error("start.audit_failed", rc);
        goto out;
    }
    if ((rc = make_metrics(app)) != SP_OK || (rc = spd_ratelimit_new(65536, &app->ratelimit)) != SP_OK ||
        (rc = spd_router_init(app)) != SP_OK) {
        fail_line("start-up", rc);
        goto out;
    }
    sp_store *store = NULL;
    rc = sp_store_open(cfg->store_url, &store);
    if (rc != SP_OK) {
        fprintf(stderr, "sealpostd: store: %s (check [store] url and that the database is reachable)\n",
                sp_strerror(rc));
        log_error("start.store_failed", rc);
        goto out;
    }
    char backend[16];
    snprintf(backend, sizeof backend, "%s", sp_store_backend_name(store));
    int schema = sp_store_schema_version(store);
    sp_store_close(store);

    sp_http_config http = {
        .bind_address = cfg->listen_address,
        .port = cfg->port,
        .cert_file = cfg->plain_http ? NULL : cfg->tls_cert,
        .key_file = cfg->plain_http ? NULL : cfg->tls_key,
        .allow_plain_http = cfg->plain_http,
        .threads = cfg->threads,
        .max_body = cfg->max_body,
        .max_header_bytes = cfg->max_header_bytes,
        .max_connections = cfg->max_connections,
        .max_connections_per_ip = cfg->max_connections_per_ip,
        .idle_timeout_s = cfg->idle_timeout_s,
        .metrics = app->metrics,
    };
    /* SQLite writes one transaction at a time: one writer; PostgreSQL's
     * run side by side: one per server thread */
    rc = spd_callbacks_start(app, strcmp(backend, "sqlite") == 0 ? 1u : cfg->threads);
    if (rc != SP_OK) {
        fprintf(stderr, "sealpostd: cannot start the callback writers: %s\n", sp_strerror(rc));
        log_error("start.callbacks_failed", rc);
        goto out;
    }
    sp_http_handlers handlers = {spd_on_headers, spd_on_request, app};
    rc = sp_http_server_start(&http, &handlers, &server);
    if (rc != SP_OK) {
        fprintf(stderr, "sealpostd: cannot serve on %s:%u: %s\n", cfg->listen_address, cfg->port, sp_strerror(rc));
        log_error("start.http_failed", rc);
        goto out;
    }
    app->bound_port = sp_http_server_port(server);
    rc = spd_sender_start(app, backend);
    if (rc != SP_OK) {
        fprintf(stderr, "sealpostd: cannot start the send workers: %s\n", sp_strerror(rc));
        log_error("start.sender_failed", rc);
        goto out;
    }
    sp_log_field started[] = {
        SP_LOG_S("version", SEALPOST_VERSION_STRING), SP_LOG_S("address", cfg->listen_address),
        SP_LOG_I("port", sp_http_server_port(server)),   SP_LOG_B("tls", !cfg->plain_http),
        SP_LOG_S("store", backend),                       SP_LOG_I("schema", schema),
        SP_LOG_I("threads", cfg->threads),                SP_LOG_I("pid", getpid()),
    };
    sp_log(SP_LOG_INFO, "started", started, sizeof started / sizeof started[0]);

    for (;;) {
        int sig = 0;
        if (sigwait(&signals, &sig) != 0) continue;
        if (sig == SIGHUP) {
            rc = sp_log_open(log_target(cfg), cfg->log_level);
            sp_log_field f[] = {SP_LOG_S("result", rc == SP_OK ? "ok" : sp_error_name(rc))};
            sp_log(rc == SP_OK ? SP_LOG_INFO : SP_LOG_ERROR, "log.reopened", f, 1);
            continue;
        }
        sp_log_field f[] = {SP_LOG_S("signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"),
                            SP_LOG_I("grace_ms", cfg->shutdown_grace_ms)};
        sp_log(SP_LOG_INFO, "stopping", f, 2);
        break;
    }
    atomic_store(&app->shutting_down, true);
    sp_http_server_stop(server, cfg->shutdown_grace_ms);
    spd_callbacks_stop(app);
    spd_sender_stop(app, cfg->shutdown_grace_ms);
    server = NULL;
    status = 0;
    sp_log(SP_LOG_INFO, "stopped", NULL, 0);
out:
    if (server) sp_http_server_stop(server, 0);
    spd_callbacks_stop(app);
    spd_sender_stop(app, 0);
    spd_context_shutdown(app);
    spd_router_free(app);
    spd_ratelimit_free(app->ratelimit);
    sp_audit_close(app->audit);
    sp_metrics_free(app->metrics);
    sp_log_close();
    return status;
}

int main(int argc, char **argv) {
    options o = {0};
    int status = parse_args(argc, argv, &o);
    if (status >= 0) return status;
    spd_app *app = calloc(1, sizeof *app);
    if (!app) return fail_line("start-up", SP_ERR_NO_MEMORY);
    atomic_init(&app->tenants_generation, 1);
    atomic_init(&app->shutting_down, false);
    status = prepare(&o, app);
    if (status < 0) {
        if (strcmp(o.command, "check-config") == 0) {
            printf("ok\n");
            status = 0;
        } else if (strcmp(o.command, "admin-credential") == 0) {
            status = admin_credential(app, o.expires_in);
        } else if (strcmp(o.command, "replay") == 0) {
            status = replay(app, o.tenant, o.campaign);
        } else {
            status = run(app);
        }
    }
    sp_key_free(app->pepper);
    sp_key_free(app->secrets_key);
    free(app);
    return status;
}
