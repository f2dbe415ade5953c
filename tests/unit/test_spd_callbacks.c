/*
 * sealpostd's callback plumbing that needs no server: the routes (the two
 * callback URLs match with their tenant and channel, only for POST, and
 * nothing near them does), the public base URL (configured, or derived
 * from the listen address and the bound port, IPv6 in brackets, http only
 * for plain HTTP), and the callback URLs a channel reply shows. The
 * request path itself (verification, de-duplication, recording) is covered
 * end to end by tests/integration/test_sealpostd_callbacks.sh.
 */
#include "sp_test_util.h"

#include "daemon.h"

static void test_routes(void **state) {
    (void)state;
    spd_route_match m;
    spd_route_match_path("POST", "/callbacks/v1/acme/sms-1/dlr", &m);
    assert_int_equal(m.route, SPD_ROUTE_CALLBACK);
    assert_true(m.method_ok);
    assert_string_equal(m.id, "acme");
    assert_string_equal(m.sub, "sms-1");
    assert_string_equal(m.label, "/callbacks/v1/{tenant}/{channel}/dlr");
    spd_route_match_path("POST", "/callbacks/v1/acme/sms/inbound", &m);
    assert_int_equal(m.route, SPD_ROUTE_CALLBACK);
    assert_string_equal(m.label, "/callbacks/v1/{tenant}/{channel}/inbound");
    spd_route_match_path("GET", "/callbacks/v1/acme/sms/dlr", &m);
    assert_int_equal(m.route, SPD_ROUTE_CALLBACK);
    assert_false(m.method_ok);
    assert_string_equal(m.allow, "POST");
    static const char *const not_routes[] = {"/callbacks/v1/acme/sms/dlr/", "/callbacks/v1/acme/dlr",
                                             "/callbacks/v1//sms/dlr",      "/callbacks/v1/acme/sms/other",
                                             "/callbacks/v2/acme/sms/dlr",  "/callbacks/v1/a/b/c/dlr"};
    for (size_t i = 0; i < sizeof not_routes / sizeof not_routes[0]; i++) {
        spd_route_match_path("POST", not_routes[i], &m);
        if (m.route != SPD_ROUTE_NONE) fail_msg("%s matched route %d", not_routes[i], (int)m.route);
    }
    spd_route_match_path("GET", "/v1/messages/msg_0190-abc", &m);
    assert_int_equal(m.route, SPD_ROUTE_MESSAGE);
    assert_true(m.method_ok);
    assert_string_equal(m.id, "msg_0190-abc");
    spd_route_match_path("GET", "/v1/campaigns/spring/stats", &m);
    assert_int_equal(m.route, SPD_ROUTE_CAMPAIGN_STATS);
    assert_string_equal(m.id, "spring");
    spd_route_match_path("POST", "/v1/campaigns/spring/stats", &m);
    assert_false(m.method_ok);
    spd_route_match_path("POST", "/v1/campaigns/spring/test", &m);
    assert_int_equal(m.route, SPD_ROUTE_CAMPAIGN_ACTION);
}

static void test_public_url(void **state) {
    (void)state;
    spd_app *app = calloc(1, sizeof *app);
    assert_non_null(app);
    char out[600];
    snprintf(app->config.listen_address, sizeof app->config.listen_address, "127.0.0.1");
    app->config.port = 0;
    app->bound_port = 40123;
    spd_public_url(app, out, sizeof out);
    assert_string_equal(out, "https://127.0.0.1:40123");
    app->config.plain_http = true;
    snprintf(app->config.listen_address, sizeof app->config.listen_address, "::1");
    spd_public_url(app, out, sizeof out);
    assert_string_equal(out, "http://[::1]:40123");
    snprintf(app->config.public_url, sizeof app->config.public_url, "https://sp.example.com/base");
    spd_public_url(app, out, sizeof out);
    assert_string_equal(out, "https://sp.example.com/base");

    json_t *urls = spd_callback_urls(app, "acme", "sms");
    assert_non_null(urls);
    assert_int_equal(json_object_size(urls), 2);
    assert_string_equal(json_string_value(json_object_get(urls, "delivery_report")),
                        "https://sp.example.com/base/callbacks/v1/acme/sms/dlr");
    assert_string_equal(json_string_value(json_object_get(urls, "inbound")),
                        "https://sp.example.com/base/callbacks/v1/acme/sms/inbound");
    json_decref(urls);
    free(app);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes),
        cmocka_unit_test(test_public_url),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
