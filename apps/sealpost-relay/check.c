/*
 * sealpost-relay --check: what the config says (keys by version and state,
 * never material; credentials by access key and expiry, never secrets) and
 * whether each next hop answers: the SMTP server (a NOOP), Kannel's sendsms
 * interface and each platform callback prefix (any HTTP answer counts: the
 * point is the network path and, over https, the platform's certificate).
 * True only when all of them do.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "relay.h"

static bool http_answers(const relay_config *cfg, const char *url, unsigned *status) {
    (void)relay_http_call(cfg, url, NULL, 0, NULL, 0, 5, status, NULL);
    return *status != 0;
}

bool relay_check(const relay_config *cfg, FILE *out) {
    bool ok = true;
    fprintf(out, "listen          %s:%u (TLS 1.2/1.3), %zu allow-list entries\n", cfg->listen_address,
            (unsigned)cfg->port, cfg->allow.count);
    fprintf(out, "merchant        %s, %zu sub-merchants\n", cfg->merchant_id, cfg->n_sub_merchants);
    int64_t now = (int64_t)time(NULL);
    for (size_t i = 0; i < cfg->n_credentials; i++) {
        const relay_credential *c = &cfg->credentials[i];
        const char *state = c->expires == 0 ? "never expires" : now < c->expires ? "valid" : "EXPIRED";
        fprintf(out, "credential      %.8s… %s", c->access_key, state);
        if (c->expires) fprintf(out, " (until %lld)", (long long)c->expires);
        fputc('\n', out);
    }
    relay_keys *keys = NULL;
    sp_error rc = relay_keys_open(cfg->keys_file, cfg->max_body, cfg->tolerance_s, &keys);
    if (rc == SP_OK) {
        char desc[4096];
        relay_keys_describe(keys, desc, sizeof desc);
        fprintf(out, "keys            %s: %s\n", cfg->keys_file, desc);
        relay_keys_close(keys);
    } else {
        fprintf(out, "keys            %s: FAILED (%s)\n", cfg->keys_file, sp_strerror(rc));
        ok = false;
    }
    relay_state *st = NULL;
    rc = relay_state_open(cfg->state_path, &st);
    if (rc == SP_OK) {
        int64_t depth = 0;
        (void)relay_state_queue_depth(st, &depth);
        fprintf(out, "state           %s: ok, %lld callbacks queued\n", cfg->state_path, (long long)depth);
        relay_state_close(st);
    } else {
        fprintf(out, "state           %s: FAILED (%s)\n", cfg->state_path, sp_strerror(rc));
        ok = false;
    }
    bool smtp = relay_smtp_reachable(cfg);
    fprintf(out, "smtp            %s: %s\n", cfg->smtp_url, smtp ? "reachable" : "UNREACHABLE");
    ok = ok && smtp;
    unsigned status = 0;
    bool kannel = http_answers(cfg, cfg->kannel_sendsms_url, &status);
    fprintf(out, "kannel          %s: %s", cfg->kannel_sendsms_url, kannel ? "reachable" : "UNREACHABLE");
    if (kannel) fprintf(out, " (HTTP %u)", status);
    fputc('\n', out);
    ok = ok && kannel;
    fprintf(out, "dlr listener    http://127.0.0.1:%u/kannel/dlr and /kannel/mo\n", (unsigned)cfg->kannel_dlr_port);
    for (size_t i = 0; i < cfg->n_callback_allow; i++) {
        bool up = http_answers(cfg, cfg->callback_allow[i], &status);
        fprintf(out, "platform        %s: %s", cfg->callback_allow[i], up ? "reachable" : "UNREACHABLE");
        if (up) fprintf(out, " (HTTP %u)", status);
        fputc('\n', out);
        ok = ok && up;
    }
    fprintf(out, "callbacks       %s, %s, retry scale %g\n", sp_profile_name(cfg->callback_profile),
            sp_alg_name(cfg->callback_alg), cfg->retry_scale);
    fprintf(out, "%s\n", ok ? "ok" : "NOT OK");
    return ok;
}
