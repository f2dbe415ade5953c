/*
 * Files that hold secrets or key state: read only when private to their
 * owner, replaced only atomically (write beside, fsync, rename, fsync the
 * directory), and serialised between processes by an advisory lock, so a
 * crash or a concurrent writer can never leave half a key file behind.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/sp_core.h"

static sp_error sp_read_all_fd(int fd, size_t max, uint8_t **out, size_t *out_len) {
    struct stat st;
    SP_ENSURE(fstat(fd, &st) == 0, SP_ERR_IO);
    SP_ENSURE(S_ISREG(st.st_mode), SP_ERR_IO);
    SP_ENSURE((st.st_mode & 077) == 0, SP_ERR_INSECURE_PERMISSIONS);
    SP_ENSURE(st.st_size >= 0 && (uint64_t)st.st_size <= max, SP_ERR_TOO_LARGE);
    size_t size = (size_t)st.st_size;
    uint8_t *buf = sp_malloc(size + 1);
    SP_ENSURE(buf != NULL, SP_ERR_NO_MEMORY);
    size_t got = 0;
    while (got < size) {
        ssize_t n = read(fd, buf + got, size - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            sp_free_wiped(buf, size + 1);
            return SP_ERR_IO;
        }
        got += (size_t)n;
    }
    *out = buf;
    *out_len = got;
    return SP_OK;
}

sp_error sp_file_read_private(const char *path, size_t max, uint8_t **out, size_t *out_len) {
    SP_ENSURE(path != NULL && out != NULL && out_len != NULL, SP_ERR_INVALID_ARGUMENT);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    SP_ENSURE(fd >= 0, errno == ENOENT ? SP_ERR_NOT_FOUND : SP_ERR_IO);
    sp_error rc = sp_read_all_fd(fd, max, out, out_len);
    close(fd);
    if (rc == SP_OK) (*out)[*out_len] = 0;
    return rc;
}

sp_error sp_fd_write_all(int fd, const void *data, size_t len) {
    const uint8_t *bytes = data;
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, bytes + done, len - done);
        if (n < 0 && errno == EINTR) continue;
        SP_ENSURE(n > 0, SP_ERR_IO);
        done += (size_t)n;
    }
    return SP_OK;
}

static sp_error sp_dir_of(const char *path, char *dir, size_t cap) {
    const char *slash = strrchr(path, '/');
    sp_wbuf b = sp_wbuf_of(dir, cap);
    if (slash == NULL) SP_GUARD(sp_wbuf_put_str(&b, "."));
    else if (slash == path) SP_GUARD(sp_wbuf_put_str(&b, "/"));
    else SP_GUARD(sp_wbuf_put(&b, path, (size_t)(slash - path)));
    return sp_wbuf_terminate(&b);
}

sp_error sp_file_replace(const char *path, const uint8_t *data, size_t len) {
    char tmp[PATH_MAX], dir[PATH_MAX];
    sp_wbuf t = sp_wbuf_of(tmp, sizeof tmp);
    SP_GUARD(sp_wbuf_put_str(&t, path));
    SP_GUARD(sp_wbuf_put_str(&t, ".tmp-XXXXXX"));
    SP_GUARD(sp_wbuf_terminate(&t));
    SP_GUARD(sp_dir_of(path, dir, sizeof dir));
    int fd = mkstemp(tmp); /* mode 0600 */
    SP_ENSURE(fd >= 0, SP_ERR_IO);
    sp_error rc = sp_fd_write_all(fd, data, len);
    if (rc == SP_OK && fsync(fd) != 0) rc = SP_ERR_IO;
    if (close(fd) != 0 && rc == SP_OK) rc = SP_ERR_IO;
    if (rc == SP_OK && rename(tmp, path) != 0) rc = SP_ERR_IO;
    if (rc != SP_OK) {
        (void)unlink(tmp);
        return rc;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    return SP_OK;
}

sp_error sp_file_lock(const char *path, int *fd) {
    char lock_path[PATH_MAX];
    sp_wbuf lb = sp_wbuf_of(lock_path, sizeof lock_path);
    SP_GUARD(sp_wbuf_put_str(&lb, path));
    SP_GUARD(sp_wbuf_put_str(&lb, ".lock"));
    SP_GUARD(sp_wbuf_terminate(&lb));
    int lock = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    SP_ENSURE(lock >= 0, SP_ERR_IO);
    if (flock(lock, LOCK_EX) != 0) {
        close(lock);
        return SP_ERR_IO;
    }
    *fd = lock;
    return SP_OK;
}

void sp_file_unlock(int fd) {
    if (fd < 0) return;
    (void)flock(fd, LOCK_UN);
    close(fd);
}
