/*
 * A throw-away PyKMIP server for tests: a temp directory (under $TMPDIR)
 * holding a test PKI made with the OpenSSL API (an EC P-256 CA, a server
 * certificate for IP 127.0.0.1, client certificates), a PyKMIP
 * configuration with a SQLite database of its own, and kmip_server.py
 * running on a free port as the leader of a process group of its own, its
 * stdin a pipe whose write end the test keeps.
 *
 * Stopping: closing that pipe makes kmip_server.py kill its whole group at
 * once (it does the same when the test dies in any way); should that not
 * happen in time, the group is stopped by PID with SIGTERM, then SIGKILL.
 * kmip_teardown stops the server and removes the directory.
 *
 * Shared by test_kms_kmip.c and test_vault_kms.c. Everything is static
 * inline: each test program includes it once and may use only part of it.
 */
#ifndef SP_TEST_KMIP_UTIL_H
#define SP_TEST_KMIP_UTIL_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#define KMIP_PYTHON "/usr/bin/python3" /* Debian's python3-pykmip is not on other Pythons' path */
#define KMIP_SERVER_START_MS 30000

/* snprintf into an array, false when it did not fit (using the result also
 * tells GCC the truncation is handled). */
#define KMIP_FMT(buf, ...) (snprintf((buf), sizeof(buf), __VA_ARGS__) < (int)sizeof(buf))

typedef struct kmip_env {
    char dir[PATH_MAX]; /* the temp directory, "" when there is none */
    int port;           /* the server's, 0 before it starts */
    pid_t server;       /* leader of the server's process group, or -1 */
    int server_stdin;   /* write end of its stdin, or -1 */
} kmip_env;

/* ---- time ---- */

static inline int64_t kmip_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void kmip_sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---- files ---- */

static inline bool kmip_path(const kmip_env *env, char *out, size_t cap, const char *name) {
    int n = snprintf(out, cap, "%s/%s", env->dir, name);
    return n > 0 && (size_t)n < cap;
}

static inline bool kmip_write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (f == NULL) return false;
    bool ok = fputs(text, f) >= 0;
    return fclose(f) == 0 && ok;
}

static inline int kmip_remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

/* Makes the temp directory, $TMPDIR/<prefix>-XXXXXX (or /tmp). */
static inline bool kmip_setup(kmip_env *env, const char *prefix) {
    memset(env, 0, sizeof *env);
    env->server = -1;
    env->server_stdin = -1;
    const char *tmp = getenv("TMPDIR");
    if (!KMIP_FMT(env->dir, "%s/%s-XXXXXX", tmp && tmp[0] ? tmp : "/tmp", prefix) || mkdtemp(env->dir) == NULL) {
        env->dir[0] = 0;
        return false;
    }
    return true;
}

/* ---- processes ---- */

/* Waits up to ms for the leader to exit; true once it has been reaped. */
static inline bool kmip_wait_exit(pid_t pid, long ms) {
    int64_t end = kmip_now_ms() + ms;
    for (;;) {
        pid_t r = waitpid(pid, NULL, WNOHANG);
        if (r == pid || (r < 0 && errno == ECHILD)) return true;
        if (kmip_now_ms() >= end) return false;
        kmip_sleep_ms(20);
    }
}

static inline void kmip_server_stop(kmip_env *env) {
    if (env->server <= 0) return;
    pid_t pid = env->server;
    env->server = -1;
    /* end of stdin: kmip_server.py kills its group at once */
    if (env->server_stdin >= 0) close(env->server_stdin);
    env->server_stdin = -1;
    if (!kmip_wait_exit(pid, 3000)) {
        kill(-pid, SIGTERM);
        if (!kmip_wait_exit(pid, 3000)) {
            kill(-pid, SIGKILL);
            waitpid(pid, NULL, 0);
        }
    }
    /* whatever of its group outlived the leader (ESRCH when nothing did) */
    kill(-pid, SIGKILL);
}

/* Stops the server and removes the directory; safe to call twice. */
static inline void kmip_teardown(kmip_env *env) {
    kmip_server_stop(env);
    if (env->dir[0] != 0) nftw(env->dir, kmip_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    env->dir[0] = 0;
}

/* Runs argv with stdout and stderr to /dev/null; its exit status, or -1. */
static inline int kmip_run_quiet(char *const argv[]) {
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) {
            dup2(null, 1);
            dup2(null, 2);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static inline bool kmip_pykmip_installed(void) {
    if (access(KMIP_PYTHON, X_OK) != 0) return false;
    char *const argv[] = {KMIP_PYTHON, "-c", "import kmip.services.server.server", NULL};
    return kmip_run_quiet(argv) == 0;
}

/* ---- ports ---- */

static inline int kmip_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static inline bool kmip_port_accepts(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return false;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

/* The last 8 KiB of a file of the directory, for a server that would not start. */
static inline void kmip_print_file_tail(const kmip_env *env, const char *name) {
    char path[PATH_MAX];
    if (!kmip_path(env, path, sizeof path, name)) return;
    FILE *f = fopen(path, "r");
    if (f == NULL) return;
    static char text[8192];
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, size > (long)sizeof text - 1 ? size - (long)sizeof text + 1 : 0, SEEK_SET);
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = 0;
    fclose(f);
    printf("---- %s ----\n%s\n", name, text);
}

/* ---- certificates (OpenSSL API) ---- */

typedef struct kmip_credential {
    EVP_PKEY *key;
    X509 *cert;
} kmip_credential;

/* Extension lists for kmip_make_credential: name, value, ..., NULL. */
static inline const char *const *kmip_ca_exts(void) {
    static const char *const e[] = {"basicConstraints", "critical,CA:TRUE", "keyUsage", "critical,keyCertSign",
                                    "subjectKeyIdentifier", "hash", NULL};
    return e;
}

static inline const char *const *kmip_server_exts(void) {
    static const char *const e[] = {"basicConstraints", "CA:FALSE", "keyUsage", "critical,digitalSignature",
                                    "extendedKeyUsage", "serverAuth", "subjectAltName", "IP:127.0.0.1", NULL};
    return e;
}

/* PyKMIP requires the clientAuth usage of its clients. */
static inline const char *const *kmip_client_exts(void) {
    static const char *const e[] = {"basicConstraints", "CA:FALSE", "keyUsage", "critical,digitalSignature",
                                    "extendedKeyUsage", "clientAuth", NULL};
    return e;
}

/* A P-256 key and a certificate for it, valid from an hour ago for two
 * days, signed by issuer (NULL: self-signed). */
static inline bool kmip_make_credential(kmip_credential *out, const char *cn, const kmip_credential *issuer,
                                        long serial, const char *const *exts) {
    out->key = EVP_EC_gen("P-256");
    out->cert = X509_new();
    if (out->key == NULL || out->cert == NULL) return false;
    X509 *x = out->cert;
    bool ok = X509_set_version(x, X509_VERSION_3) == 1 && ASN1_INTEGER_set(X509_get_serialNumber(x), serial) == 1 &&
              X509_gmtime_adj(X509_getm_notBefore(x), -3600) != NULL &&
              X509_gmtime_adj(X509_getm_notAfter(x), 2 * 86400) != NULL && X509_set_pubkey(x, out->key) == 1;
    X509_NAME *name = X509_get_subject_name(x);
    ok = ok && X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0) == 1;
    ok = ok && X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer->cert) : name) == 1;
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer ? issuer->cert : x, x, NULL, NULL, 0);
    for (; ok && exts != NULL && exts[0] != NULL; exts += 2) {
        X509_EXTENSION *e = X509V3_EXT_nconf(NULL, &ctx, exts[0], exts[1]);
        ok = e != NULL && X509_add_ext(x, e, -1) == 1;
        X509_EXTENSION_free(e);
    }
    return ok && X509_sign(x, issuer ? issuer->key : out->key, EVP_sha256()) > 0;
}

/* Writes <name>.crt and <name>.key (0600) into the directory. */
static inline bool kmip_save_credential(const kmip_env *env, const kmip_credential *c, const char *name) {
    char path[PATH_MAX], file[64];
    bool ok = KMIP_FMT(file, "%s.crt", name) && kmip_path(env, path, sizeof path, file);
    FILE *f = ok ? fopen(path, "w") : NULL;
    ok = f != NULL && PEM_write_X509(f, c->cert) == 1;
    if (f != NULL) ok = fclose(f) == 0 && ok;
    ok = ok && KMIP_FMT(file, "%s.key", name) && kmip_path(env, path, sizeof path, file);
    int fd = ok ? open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600) : -1;
    f = fd >= 0 ? fdopen(fd, "w") : NULL;
    ok = ok && f != NULL && PEM_write_PrivateKey(f, c->key, NULL, NULL, 0, NULL, NULL) == 1;
    if (f != NULL) ok = fclose(f) == 0 && ok;
    else if (fd >= 0) close(fd);
    return ok;
}

static inline void kmip_free_credential(kmip_credential *c) {
    EVP_PKEY_free(c->key);
    X509_free(c->cert);
    c->key = NULL;
    c->cert = NULL;
}

/* The least a server needs: ca, server (IP 127.0.0.1) and one client,
 * "sealpost-test-client". */
static inline bool kmip_make_basic_pki(const kmip_env *env) {
    kmip_credential ca = {0}, server = {0}, client = {0};
    bool ok = kmip_make_credential(&ca, "sealpost test CA", NULL, 1, kmip_ca_exts()) &&
              kmip_make_credential(&server, "127.0.0.1", &ca, 2, kmip_server_exts()) &&
              kmip_make_credential(&client, "sealpost-test-client", &ca, 3, kmip_client_exts()) &&
              kmip_save_credential(env, &ca, "ca") && kmip_save_credential(env, &server, "server") &&
              kmip_save_credential(env, &client, "client");
    kmip_free_credential(&ca);
    kmip_free_credential(&server);
    kmip_free_credential(&client);
    return ok;
}

/* ---- the server ---- */

/* Starts kmip_server.py with ca.crt, server.crt and server.key of the
 * directory, and waits until it listens. The script is found next to this
 * file: ctest names the source tree (SP_SOURCE_DIR), a direct run finds it
 * through the absolute path CMake compiles with. */
static inline bool kmip_server_start(kmip_env *env) {
    char conf[PATH_MAX], log[PATH_MAX], out[PATH_MAX], policies[PATH_MAX], script[PATH_MAX];
    char text[4 * PATH_MAX];
    const char *src = getenv("SP_SOURCE_DIR");
    const char *slash = strrchr(__FILE__, '/');
    bool named = src     ? KMIP_FMT(script, "%s/tests/integration/kmip_server.py", src)
                 : slash ? KMIP_FMT(script, "%.*s/kmip_server.py", (int)(slash - __FILE__), __FILE__)
                         : KMIP_FMT(script, "kmip_server.py");
    if (!named || access(script, R_OK) != 0 || !kmip_path(env, conf, sizeof conf, "server.conf") ||
        !kmip_path(env, log, sizeof log, "server.log") || !kmip_path(env, out, sizeof out, "server.out") ||
        !kmip_path(env, policies, sizeof policies, "policies"))
        return false;
    if (mkdir(policies, 0700) != 0) return false;
    env->port = kmip_free_port();
    if (env->port <= 0) return false;
    if (!KMIP_FMT(text,
                  "[server]\n"
                  "hostname=127.0.0.1\n"
                  "port=%d\n"
                  "certificate_path=%s/server.crt\n"
                  "key_path=%s/server.key\n"
                  "ca_path=%s/ca.crt\n"
                  "auth_suite=TLS1.2\n"
                  "policy_path=%s\n"
                  "enable_tls_client_auth=True\n"
                  "logging_level=DEBUG\n"
                  "database_path=%s/pykmip.db\n",
                  env->port, env->dir, env->dir, env->dir, policies, env->dir) ||
        !kmip_write_text(conf, text))
        return false;

    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) return false;
    pid_t pid = fork();
    if (pid < 0) {
        close(pipefd[0]);
        close(pipefd[1]);
        return false;
    }
    if (pid == 0) {
        /* a group of its own, so it and its helpers stop together; its
         * stdin is the pipe whose end tells it that we are gone */
        setpgid(0, 0);
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0 || dup2(pipefd[0], 0) < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0) _exit(127);
        char *const argv[] = {KMIP_PYTHON, script, conf, log, NULL};
        execv(KMIP_PYTHON, argv);
        _exit(127);
    }
    setpgid(pid, pid); /* also here, so a kill(-pid) right away finds the group */
    close(pipefd[0]);
    env->server = pid;
    env->server_stdin = pipefd[1];

    int64_t end = kmip_now_ms() + KMIP_SERVER_START_MS;
    while (kmip_now_ms() < end) {
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            env->server = -1;
            close(env->server_stdin);
            env->server_stdin = -1;
            printf("PyKMIP server exited during start-up\n");
            kmip_print_file_tail(env, "server.out");
            kmip_print_file_tail(env, "server.log");
            return false;
        }
        if (kmip_port_accepts(env->port)) return true;
        kmip_sleep_ms(100);
    }
    printf("PyKMIP server did not listen within %d ms\n", KMIP_SERVER_START_MS);
    kmip_print_file_tail(env, "server.out");
    return false;
}

#endif
