/*
 * A throw-away SoftHSM2 for tests: a temp directory with its own
 * softhsm2.conf and token directory (SOFTHSM2_CONF points there, so the
 * machine's tokens are never touched), tokens made with softhsm2-util, and
 * a direct PKCS#11 handle so a test can look at what the code under test
 * left in the token instead of trusting it.
 *
 * Everything is static inline: each test program includes it once and may
 * use only part of it.
 */
#ifndef SP_TEST_SOFTHSM_UTIL_H
#define SP_TEST_SOFTHSM_UTIL_H

#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#if __has_include(<p11-kit/pkcs11.h>)
#include <p11-kit/pkcs11.h>
#else
#include <p11-kit-1/p11-kit/pkcs11.h>
#endif

#define SOFTHSM_UTIL "/usr/bin/softhsm2-util"
#define SOFTHSM_MODULE "/usr/lib/softhsm/libsofthsm2.so"
#define SOFTHSM_SO_PIN "0000"

extern char **environ;

/* snprintf into an array, false when it did not fit (using the result also
 * tells GCC the truncation is handled). */
#define SOFTHSM_FMT(buf, ...) (snprintf((buf), sizeof(buf), __VA_ARGS__) < (int)sizeof(buf))

typedef struct softhsm_env {
    char dir[PATH_MAX];    /* the temp directory */
    char tokens[PATH_MAX]; /* its token directory */
    char conf[PATH_MAX];
} softhsm_env;

static inline bool softhsm_available(void) {
    return access(SOFTHSM_UTIL, X_OK) == 0 && access(SOFTHSM_MODULE, R_OK) == 0;
}

static inline bool softhsm_write_file(const char *path, const char *text, mode_t mode) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) return false;
    size_t len = strlen(text);
    bool ok = write(fd, text, len) == (ssize_t)len && fchmod(fd, mode) == 0;
    return close(fd) == 0 && ok;
}

/* Runs argv (no shell), its output discarded; true when it exits 0. */
static inline bool softhsm_run(char *const argv[]) {
    posix_spawn_file_actions_t fa;
    if (posix_spawn_file_actions_init(&fa) != 0) return false;
    (void)posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
    (void)posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) return false;
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static inline bool softhsm_setup(softhsm_env *env) {
    memset(env, 0, sizeof *env);
    if (!SOFTHSM_FMT(env->dir, "/tmp/sp-softhsm-XXXXXX") || mkdtemp(env->dir) == NULL) return false;
    if (!SOFTHSM_FMT(env->tokens, "%s/tokens", env->dir)) return false;
    if (!SOFTHSM_FMT(env->conf, "%s/softhsm2.conf", env->dir)) return false;
    if (mkdir(env->tokens, 0700) != 0) return false;
    char text[PATH_MAX + 128];
    if (!SOFTHSM_FMT(text, "directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n",
                     env->tokens))
        return false;
    return softhsm_write_file(env->conf, text, 0600) && setenv("SOFTHSM2_CONF", env->conf, 1) == 0;
}

/* The one entry of dir not in before (a NULL-terminated list), or false. */
static inline bool softhsm_new_entry(const char *dir, char *const *before, char *out, size_t cap) {
    DIR *d = opendir(dir);
    if (d == NULL) return false;
    bool found = false;
    struct dirent *e;
    while (!found && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        bool old = false;
        for (char *const *b = before; *b && !old; b++) old = strcmp(*b, e->d_name) == 0;
        if (!old) found = snprintf(out, cap, "%s/%s", dir, e->d_name) < (int)cap;
    }
    closedir(d);
    return found;
}

/* Makes a token; its_dir (may be NULL) receives the directory SoftHSM
 * keeps it in, so a test can take it away. */
static inline bool softhsm_init_token(const softhsm_env *env, const char *label, const char *pin, char *its_dir,
                                      size_t cap) {
    char *before[64] = {0};
    size_t n = 0;
    DIR *d = opendir(env->tokens);
    if (d == NULL) return false;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n + 1 < sizeof before / sizeof before[0]) {
        if (e->d_name[0] != '.') before[n++] = strdup(e->d_name);
    }
    closedir(d);
    char *argv[] = {SOFTHSM_UTIL, "--init-token", "--free",       "--label", (char *)label,
                    "--so-pin",   SOFTHSM_SO_PIN, "--pin",       (char *)pin, NULL};
    bool ok = softhsm_run(argv);
    if (ok && its_dir != NULL) ok = softhsm_new_entry(env->tokens, before, its_dir, cap);
    for (size_t i = 0; i < n; i++) free(before[i]);
    return ok;
}

static inline int softhsm_rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* rm -rf; keep_top leaves the directory itself (empties it). */
static inline void softhsm_rm_tree(const char *path, bool keep_top) {
    if (!keep_top) {
        (void)nftw(path, softhsm_rm_one, 16, FTW_DEPTH | FTW_PHYS);
        return;
    }
    DIR *d = opendir(path);
    if (d == NULL) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        char child[PATH_MAX];
        if (!SOFTHSM_FMT(child, "%s/%s", path, e->d_name)) continue;
        (void)nftw(child, softhsm_rm_one, 16, FTW_DEPTH | FTW_PHYS);
    }
    closedir(d);
}

static inline void softhsm_teardown(softhsm_env *env) {
    if (env->dir[0]) softhsm_rm_tree(env->dir, false);
    (void)unsetenv("SOFTHSM2_CONF");
}

/* ---- direct PKCS#11, to check the token behind the library's back ---- */
typedef struct p11_direct {
    void *dl;
    CK_FUNCTION_LIST_PTR f;
    bool owned; /* we initialized the module, so we finalize it */
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE s;
} p11_direct;

/* Opens a RW session on the token labelled label, logged in with pin.
 * The module may already be initialized (an sp_kms holds it); then it is
 * left initialized. */
static inline bool p11_direct_open(p11_direct *d, const char *label, const char *pin) {
    memset(d, 0, sizeof *d);
    d->dl = dlopen(SOFTHSM_MODULE, RTLD_NOW | RTLD_LOCAL);
    if (d->dl == NULL) return false;
    CK_C_GetFunctionList get;
    void *sym = dlsym(d->dl, "C_GetFunctionList");
    if (sym == NULL) return false;
    memcpy(&get, &sym, sizeof get);
    if (get(&d->f) != CKR_OK) return false;
    CK_C_INITIALIZE_ARGS args;
    memset(&args, 0, sizeof args);
    args.flags = CKF_OS_LOCKING_OK;
    CK_RV rv = d->f->C_Initialize(&args);
    if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) return false;
    d->owned = rv == CKR_OK;
    CK_SLOT_ID slots[32];
    CK_ULONG n = 32;
    if (d->f->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK) return false;
    size_t want = strlen(label);
    bool found = false;
    for (CK_ULONG i = 0; i < n && !found; i++) {
        CK_TOKEN_INFO ti;
        if (d->f->C_GetTokenInfo(slots[i], &ti) != CKR_OK) continue;
        bool same = memcmp(ti.label, label, want) == 0;
        for (size_t k = want; k < sizeof ti.label && same; k++) same = ti.label[k] == ' ';
        if (same) {
            d->slot = slots[i];
            found = true;
        }
    }
    if (!found) return false;
    if (d->f->C_OpenSession(d->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &d->s) != CKR_OK) return false;
    rv = d->f->C_Login(d->s, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin));
    return rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN;
}

static inline void p11_direct_close(p11_direct *d) {
    if (d->f != NULL) {
        if (d->s != CK_INVALID_HANDLE) (void)d->f->C_CloseSession(d->s);
        if (d->owned) (void)d->f->C_Finalize(NULL);
    }
    if (d->dl != NULL) dlclose(d->dl);
    memset(d, 0, sizeof *d);
}

/* The number of objects of class cls labelled label; *h receives one. */
static inline CK_ULONG p11_direct_find(p11_direct *d, CK_OBJECT_CLASS cls, const char *label, CK_OBJECT_HANDLE *h) {
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof cls},
        {CKA_LABEL, (void *)label, strlen(label)},
    };
    CK_OBJECT_HANDLE found[4];
    CK_ULONG n = 0;
    if (d->f->C_FindObjectsInit(d->s, tmpl, 2) != CKR_OK) return 0;
    if (d->f->C_FindObjects(d->s, found, 4, &n) != CKR_OK) n = 0;
    (void)d->f->C_FindObjectsFinal(d->s);
    if (n > 0 && h != NULL) *h = found[0];
    return n;
}

/* A boolean attribute; -1 when the token does not say. */
static inline int p11_direct_bool(p11_direct *d, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type) {
    CK_BBOOL v = CK_FALSE;
    CK_ATTRIBUTE a = {type, &v, sizeof v};
    if (d->f->C_GetAttributeValue(d->s, h, &a, 1) != CKR_OK) return -1;
    return v == CK_TRUE;
}

/* An AES-256 token key with the given sensitivity and extractability, to
 * prove the library refuses the unsafe combinations. */
static inline bool p11_direct_make_aes(p11_direct *d, const char *label, bool sensitive, bool extractable) {
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE kt = CKK_AES;
    CK_ULONG len = 32;
    CK_BBOOL yes = CK_TRUE, sens = sensitive ? CK_TRUE : CK_FALSE, extr = extractable ? CK_TRUE : CK_FALSE;
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof cls},       {CKA_KEY_TYPE, &kt, sizeof kt},  {CKA_VALUE_LEN, &len, sizeof len},
        {CKA_LABEL, (void *)label, strlen(label)}, {CKA_TOKEN, &yes, 1},      {CKA_PRIVATE, &yes, 1},
        {CKA_SENSITIVE, &sens, 1},           {CKA_EXTRACTABLE, &extr, 1},     {CKA_WRAP, &yes, 1},
        {CKA_UNWRAP, &yes, 1},               {CKA_ENCRYPT, &yes, 1},          {CKA_DECRYPT, &yes, 1},
    };
    CK_MECHANISM gen = {CKM_AES_KEY_GEN, NULL, 0};
    CK_OBJECT_HANDLE h;
    return d->f->C_GenerateKey(d->s, &gen, tmpl, sizeof tmpl / sizeof tmpl[0], &h) == CKR_OK;
}

#endif
