/*
 * The store on PostgreSQL 15: the shared suite (tests/store_suite.h), each
 * test on a database of its own in a throwaway cluster that this program
 * starts with scripts/pg-fixture (from SP_SOURCE_DIR) and stops at exit,
 * also when a test fails. A missing PostgreSQL fails the run: the fixture
 * cannot start and the group setup reports it.
 *
 * Beyond the suite: processes opening a fresh database at the same moment
 * migrate it once (the advisory lock), and a connection the server drops is
 * SP_ERR_STORE until the next ping reconnects it.
 */
#include <libpq-fe.h>

#include "store_suite.h"

static char fixture_dir[256];
static char base_url[SP_STORE_MAX_URL + 1]; /* the cluster's "sealpost" database */
static int next_db;
static bool fixture_running;

static void fixture_stop(void) {
    if (!fixture_running) return;
    fixture_running = false;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "bash '%s/scripts/pg-fixture' stop '%s'", getenv("SP_SOURCE_DIR"), fixture_dir);
    if (system(cmd) != 0) fprintf(stderr, "pg-fixture stop failed\n");
    (void)sp_test_rm_tree(fixture_dir); /* what a start that failed early left */
}

static bool fixture_start(void) {
    const char *src = getenv("SP_SOURCE_DIR");
    if (src == NULL || *src == 0) {
        fprintf(stderr, "SP_SOURCE_DIR is not set\n");
        return false;
    }
    if (!sp_test_mkdtemp(fixture_dir, sizeof fixture_dir, "sp-pg")) return false;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "bash '%s/scripts/pg-fixture' start '%s'", src, fixture_dir);
    fixture_running = true; /* from here on, stop cleans up whatever got made */
    atexit(fixture_stop);
    FILE *p = popen(cmd, "r");
    if (p == NULL) return false;
    bool got = fgets(base_url, sizeof base_url, p) != NULL;
    int status = pclose(p);
    if (!got || status != 0) {
        fprintf(stderr, "pg-fixture start failed: is PostgreSQL 15 installed (scripts/bootstrap)?\n");
        return false;
    }
    base_url[strcspn(base_url, "\n")] = 0;
    return strncmp(base_url, "postgresql://", 13) == 0;
}

/* The URL of database `name` in the cluster. */
static bool url_of(char *url, size_t cap, const char *name) {
    const char *slash = strrchr(base_url, '/');
    int n = snprintf(url, cap, "%.*s/%s", (int)(slash - base_url), base_url, name);
    return n > 0 && (size_t)n < cap;
}

static void admin_sql(const char *url, const char *sql) {
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK) fail_msg("connect %s: %s", url, PQerrorMessage(c));
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) fail_msg("%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
}

static bool suite_new_database(char *url, size_t cap, const char *dir) {
    (void)dir;
    char name[32], sql[64];
    snprintf(name, sizeof name, "sp_t%d", ++next_db);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", name);
    admin_sql(base_url, sql);
    return url_of(url, cap, name);
}

static void suite_drop_database(const char *url) {
    char sql[128];
    snprintf(sql, sizeof sql, "DROP DATABASE %s WITH (FORCE)", strrchr(url, '/') + 1);
    admin_sql(base_url, sql);
}

static void suite_set_schema_version(const char *url, int version) {
    char sql[128];
    snprintf(sql, sizeof sql, "INSERT INTO schema_version (version, applied) VALUES (%d, 0)", version);
    admin_sql(url, sql);
}

static void suite_downgrade_to_1(const char *url) {
    admin_sql(url, "DROP TABLE callbacks_seen; DROP TABLE suppressions; "
                   "DROP TABLE outbox; DROP TABLE campaigns; DROP TABLE channels; DROP FUNCTION sp_uuid_v7(); "
                   "DELETE FROM schema_version WHERE version >= 2");
}

static void suite_downgrade_to_2(const char *url) {
    admin_sql(url, "DROP TABLE callbacks_seen; DROP TABLE suppressions; DROP INDEX outbox_profile; "
                   "ALTER TABLE outbox DROP COLUMN delivery, DROP COLUMN delivery_at, DROP COLUMN failure_code, "
                   "DROP COLUMN opened_at, DROP COLUMN clicked_at, DROP COLUMN replied_at, "
                   "DROP COLUMN unsubscribed_at, DROP COLUMN complained_at, DROP COLUMN callback_at, "
                   "DROP COLUMN callback_encrypted; DROP INDEX campaigns_expanding; "
                   "ALTER TABLE campaigns DROP COLUMN expanded_to; DELETE FROM schema_version WHERE version >= 3");
}

/* Four processes open one fresh database together: all succeed, and the
 * schema was applied once. */
static void test_pg_concurrent_migrations(void **state) {
    (void)state;
    char url[SP_STORE_MAX_URL + 1];
    assert_true(suite_new_database(url, sizeof url, NULL));
    enum { N = 4 };
    pid_t pids[N];
    for (int i = 0; i < N; i++) {
        pids[i] = sp_test_fork();
        if (pids[i] == 0) {
            sp_store *s = NULL;
            sp_error rc = sp_store_open(url, &s);
            sp_store_close(s);
            _exit(rc == SP_OK ? 0 : 10 + (int)rc);
        }
    }
    for (int i = 0; i < N; i++) assert_int_equal(sp_test_wait(pids[i]), 0);
    PGconn *c = PQconnectdb(url);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PGresult *r = PQexec(c, "SELECT COUNT(*) FROM schema_version");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    sp_store *s = NULL;
    assert_ok(sp_store_open(url, &s));
    assert_int_equal(strtol(PQgetvalue(r, 0, 0), NULL, 10), sp_store_schema_version(s));
    assert_string_equal(sp_store_backend_name(s), "postgresql");
    sp_store_close(s);
    PQclear(r);
    PQfinish(c);
    suite_drop_database(url);
}

/* The server ends the session: calls fail with SP_ERR_STORE, then a ping
 * (or the next transaction) reconnects and prepares statements anew. */
static void test_pg_connection_lost(void **state) {
    suite_fixture *f = *state;
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '%s' AND pid <> pg_backend_pid()",
             strrchr(f->url, '/') + 1);
    PGconn *c = PQconnectdb(base_url);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PGresult *r = PQexec(c, sql);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    PQclear(r);
    PQfinish(c);
    uint64_t n = 0;
    assert_rc(sp_store_profile_count(f->s, "acme", &n), SP_ERR_STORE);
    assert_ok(sp_store_ping(f->s));
    assert_ok(sp_store_profile_count(f->s, "acme", &n));
    assert_int_equal(n, 0);
    assert_ok(sp_store_begin(f->s));
    suite_upsert(f->s, "acme", "after", "{}", NULL, 0, T0);
    assert_ok(sp_store_commit(f->s));
    assert_int_equal(suite_profiles(f->s, "acme"), 1);
}

static int group_setup(void **state) {
    (void)state;
    if (sp_init() != SP_OK) return -1;
    return fixture_start() ? 0 : -1;
}

static int group_teardown(void **state) {
    (void)state;
    fixture_stop();
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        SUITE_TESTS,
        cmocka_unit_test(test_pg_concurrent_migrations),
        SUITE_TEST(test_pg_connection_lost),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
