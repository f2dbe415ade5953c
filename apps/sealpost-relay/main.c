/*
 * sealpost-relay: the provider side of sealpost.
 *
 *   sealpost-relay --config FILE            run until SIGTERM/SIGINT
 *   sealpost-relay --check --config FILE    what is configured and reachable
 *
 * Start-up, each step failing with one line on stderr: config (exit 2 when
 * it is wrong), hardening (no core dumps, no ptrace), the log, the state
 * file, the key file, metrics, the DLR listener, the HTTPS API, the
 * callback thread. Signals are blocked before any thread exists and taken
 * with sigwait(): SIGHUP reopens the log and rereads the key file;
 * SIGTERM/SIGINT stop accepting, let requests in flight finish, stop the
 * callback thread (what is queued stays in the state file) and exit.
 */
#include <curl/curl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "relay.h"

#define EXIT_FAIL 1
#define EXIT_USAGE 2

static void usage(FILE *to) {
    fprintf(to, "usage: sealpost-relay --config FILE\n"
                "       sealpost-relay --check --config FILE\n"
                "       sealpost-relay --version | --help\n"
                "\n"
                "Accepts sealed payloads from a sealpost platform, hands e-mail to an SMTP server\n"
                "and SMS to Kannel, and reports back with sealed callbacks (see docs/RELAY.md and\n"
                "relay.conf.example). --check prints what FILE configures and whether SMTP, Kannel\n"
                "and the platform answer; it exits 0 only when all of them do.\n");
}

static const char *log_target(const relay_config *cfg) {
    return strcmp(cfg->log_path, "-") == 0 ? NULL : cfg->log_path;
}

int main(int argc, char **argv) {
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'}, {"check", no_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},         {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL;
    bool check = false;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'c': config = optarg; break;
        case 'k': check = true; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("sealpost-relay %s\n", SEALPOST_VERSION_STRING); return 0;
        default:
            fprintf(stderr, "sealpost-relay: bad option '%s' (see --help)\n", argv[optind - 1]);
            return EXIT_USAGE;
        }
    }
    if (optind < argc || !config) {
        fprintf(stderr, "sealpost-relay: --config FILE is required (see --help)\n");
        return EXIT_USAGE;
    }
    umask(077);
    if (sp_init() != SP_OK || curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "sealpost-relay: cannot initialise the crypto or HTTP libraries\n");
        return EXIT_FAIL;
    }
    static relay_app app; /* large (the config's tables): not on the stack */
    char err[600];
    sp_error rc = relay_config_load(config, &app.cfg, err, sizeof err);
    if (rc != SP_OK) {
        fprintf(stderr, "sealpost-relay: %s\n", err);
        return EXIT_USAGE;
    }
    if (check) {
        bool ok = relay_check(&app.cfg, stdout);
        relay_config_wipe(&app.cfg);
        curl_global_cleanup();
        return ok ? 0 : EXIT_FAIL;
    }
    if ((rc = sp_harden_process()) != SP_OK) {
        fprintf(stderr, "sealpost-relay: hardening: %s\n", sp_strerror(rc));
        return EXIT_FAIL;
    }
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    signal(SIGPIPE, SIG_IGN);
    pthread_mutex_init(&app.cb_lock, NULL);
    pthread_cond_init(&app.cb_cond, NULL);

    int status = EXIT_FAIL;
    sp_http_server *api = NULL, *dlr = NULL;
    relay_config *cfg = &app.cfg;
    if ((rc = sp_log_open(log_target(cfg), cfg->log_level)) != SP_OK) {
        fprintf(stderr, "sealpost-relay: log %s: %s\n", cfg->log_path, sp_strerror(rc));
        goto out;
    }
    if ((rc = relay_state_open(cfg->state_path, &app.state)) != SP_OK) {
        fprintf(stderr, "sealpost-relay: state file %s: %s\n", cfg->state_path, sp_strerror(rc));
        goto out;
    }
    if ((rc = relay_keys_open(cfg->keys_file, cfg->max_body, cfg->tolerance_s, &app.keys)) != SP_OK) {
        fprintf(stderr, "sealpost-relay: key file %s: %s (it needs an active version)\n", cfg->keys_file,
                sp_strerror(rc));
        goto out;
    }
    if ((rc = relay_metrics_init(&app)) != SP_OK) {
        fprintf(stderr, "sealpost-relay: metrics: %s\n", sp_strerror(rc));
        goto out;
    }
    sp_http_config dlr_http = {
        .bind_address = "127.0.0.1",
        .port = cfg->kannel_dlr_port,
        .allow_plain_http = true,
        .threads = 2,
        .max_body = 16384,
        .max_header_bytes = 32768,
        .max_connections = 256,
        .max_connections_per_ip = 256,
        .idle_timeout_s = 30,
        .metrics = app.metrics,
    };
    sp_http_handlers dlr_handlers = {NULL, relay_dlr_on_request, &app};
    if ((rc = sp_http_server_start(&dlr_http, &dlr_handlers, &dlr)) != SP_OK) {
        fprintf(stderr, "sealpost-relay: cannot serve Kannel on 127.0.0.1:%u: %s\n", (unsigned)cfg->kannel_dlr_port,
                sp_strerror(rc));
        goto out;
    }
    sp_http_config http = {
        .bind_address = cfg->listen_address,
        .port = cfg->port,
        .cert_file = cfg->tls_cert,
        .key_file = cfg->tls_key,
        .threads = cfg->threads,
        .max_body = cfg->max_body,
        .max_header_bytes = 16384,
        .max_connections = 1024,
        .max_connections_per_ip = 256,
        .idle_timeout_s = 30,
        .metrics = app.metrics,
    };
    sp_http_handlers handlers = {relay_on_headers, relay_on_request, &app};
    if ((rc = sp_http_server_start(&http, &handlers, &api)) != SP_OK) {
        fprintf(stderr, "sealpost-relay: cannot serve on %s:%u: %s\n", cfg->listen_address, (unsigned)cfg->port,
                sp_strerror(rc));
        goto out;
    }
    if ((rc = relay_callbacks_start(&app)) != SP_OK) {
        fprintf(stderr, "sealpost-relay: callback thread: %s\n", sp_strerror(rc));
        goto out;
    }
    char keys[1024];
    relay_keys_describe(app.keys, keys, sizeof keys);
    sp_log_field started[] = {
        SP_LOG_S("version", SEALPOST_VERSION_STRING), SP_LOG_S("address", cfg->listen_address),
        SP_LOG_I("port", sp_http_server_port(api)),   SP_LOG_I("dlr_port", sp_http_server_port(dlr)),
        SP_LOG_S("keys", keys),                       SP_LOG_I("pid", getpid()),
    };
    sp_log(SP_LOG_INFO, "started", started, sizeof started / sizeof started[0]);
    for (;;) {
        int sig = 0;
        if (sigwait(&signals, &sig) != 0) continue;
        if (sig == SIGHUP) {
            if (sp_log_open(log_target(cfg), cfg->log_level) != SP_OK) relay_log_error("log.reopen_failed", SP_ERR_IO);
            relay_keys_refresh(app.keys, true);
            continue;
        }
        sp_log_field f[] = {SP_LOG_S("signal", sig == SIGTERM ? "SIGTERM" : "SIGINT")};
        sp_log(SP_LOG_INFO, "stopping", f, 1);
        break;
    }
    status = 0;
out:
    sp_http_server_stop(api, 10000);
    sp_http_server_stop(dlr, 2000);
    relay_callbacks_stop(&app);
    relay_keys_close(app.keys);
    relay_state_close(app.state);
    sp_metrics_free(app.metrics);
    relay_config_wipe(&app.cfg);
    curl_global_cleanup();
    sp_log(SP_LOG_INFO, "stopped", NULL, 0);
    sp_log_close();
    return status;
}
