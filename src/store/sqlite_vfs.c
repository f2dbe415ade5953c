/*
 * A thin SQLite VFS over the platform's default one that writes each
 * commit's WAL frames with one pwrite instead of two per page.
 *
 * SQLite appends a frame as two writes, its 24-byte header and then the
 * page: a commit that dirtied 200 pages (100 profiles, each adding two
 * entries at random places of the blind-index index) made 400 system
 * calls while holding the write lock, about 0.5 ms of a 3 ms transaction
 * on an idle machine and more on a busy one. Here the writes that extend
 * the WAL contiguously are gathered in a buffer and written when the
 * commit's last frame is complete: a frame header whose "database size
 * after commit" field is non-zero marks the commit frame, and the page
 * written after it ends the commit. The frames reach the file before the
 * write returns, and so before SQLite publishes them in the wal-index,
 * which is the moment any other connection or process can look for them.
 *
 * Anything else flushes first: a read or a write elsewhere in the file,
 * a sync, a truncate, a size query, a file control, closing, or a full
 * buffer. A failed flush is the failed write, reported to SQLite as the
 * write's own I/O error, and nothing is kept that the file lacks.
 * As a safety net, should a future SQLite write frames some other way,
 * the database file's shared-memory barrier (which SQLite calls between
 * the two copies of the wal-index header it writes at every commit)
 * flushes its connection's WAL too; that call cannot report an error, so
 * a failure there aborts the process before the header claims frames the
 * file does not hold; recovery at the next open then drops the unfinished
 * transaction, as after a crash.
 *
 * The database file of a connection and its WAL are linked through the
 * name SQLite gives both: the WAL's name lives in the same allocation as
 * its database's, and sqlite3_filename_database() returns the very
 * pointer the database file was opened with.
 *
 * Only connections opened with this VFS's name use it; every other call
 * passes straight to the default VFS.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "store/store_internal.h"

/* a commit larger than this is written in several steps (still few) */
#define SP_VFS_BUFFER_MAX (4u << 20)
#define SP_VFS_FRAME_HEADER 24
/* The unix VFS writes at most the low 17 bits of a length per pwrite and
 * takes a zero-length write for a full disk: a write of exactly 128 KiB
 * fails. Flushes go in pieces below that. */
#define SP_VFS_WRITE_MAX (124u << 10)

typedef struct sp_vfs_file sp_vfs_file;
struct sp_vfs_file {
    sqlite3_file base;       /* pMethods: ours */
    sqlite3_file *real;      /* the default VFS's file, allocated right after this struct */
    const char *name;        /* the name SQLite opened it with (its own pointer) */
    bool is_wal;
    /* WAL files: the buffered append */
    uint8_t *buf;
    size_t len, cap;
    sqlite3_int64 buf_off;   /* file offset of buf[0] */
    bool commit_frame;       /* the header of the commit frame was the last write */
    /* a database file and its connection's WAL, both ways */
    sp_vfs_file *peer;
    sp_vfs_file *next;       /* the registry of open database files */
};

static sqlite3_vfs *sp_vfs_base;
static sqlite3_vfs sp_vfs;
static pthread_mutex_t sp_vfs_lock = PTHREAD_MUTEX_INITIALIZER;
static sp_vfs_file *sp_vfs_dbs;
static sqlite3_io_methods sp_vfs_methods_v1, sp_vfs_methods_v2, sp_vfs_methods_v3;

static int sp_vfs_flush(sp_vfs_file *f) {
    int rc = SQLITE_OK;
    for (size_t at = 0; at < f->len && rc == SQLITE_OK; at += SP_VFS_WRITE_MAX) {
        size_t n = f->len - at < SP_VFS_WRITE_MAX ? f->len - at : SP_VFS_WRITE_MAX;
        rc = f->real->pMethods->xWrite(f->real, f->buf + at, (int)n, f->buf_off + (sqlite3_int64)at);
    }
    /* written or not, the bytes are not kept: SQLite sees the error as its
     * write's and rolls the transaction back, rewriting what it needs */
    f->len = 0;
    f->commit_frame = false;
    return rc;
}

static void sp_vfs_release(sp_vfs_file *f) {
    sqlite3_free(f->buf);
    f->buf = NULL;
    f->len = f->cap = 0;
}

static int sp_vfs_close(sqlite3_file *file) {
    sp_vfs_file *f = (sp_vfs_file *)file;
    int rc = f->is_wal ? sp_vfs_flush(f) : SQLITE_OK;
    pthread_mutex_lock(&sp_vfs_lock);
    if (f->peer != NULL) f->peer->peer = NULL;
    f->peer = NULL;
    if (!f->is_wal) {
        for (sp_vfs_file **at = &sp_vfs_dbs; *at != NULL; at = &(*at)->next) {
            if (*at == f) {
                *at = f->next;
                break;
            }
        }
    }
    pthread_mutex_unlock(&sp_vfs_lock);
    sp_vfs_release(f);
    int rc2 = f->real->pMethods->xClose(f->real);
    return rc != SQLITE_OK ? rc : rc2;
}

static int sp_vfs_read(sqlite3_file *file, void *out, int n, sqlite3_int64 off) {
    sp_vfs_file *f = (sp_vfs_file *)file;
    int rc = sp_vfs_flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xRead(f->real, out, n, off);
}

static bool sp_vfs_reserve(sp_vfs_file *f, size_t more) {
    if (f->cap - f->len >= more) return true;
    if (f->len + more > SP_VFS_BUFFER_MAX) return false;
    size_t cap = f->cap ? f->cap : 256u << 10;
    while (cap < f->len + more) cap *= 2;
    if (cap > SP_VFS_BUFFER_MAX) cap = SP_VFS_BUFFER_MAX;
    /* SQLite's allocator, as for the pages this buffer copies (and outside
     * the library's counted funnel: a failure here is no error) */
    uint8_t *b = sqlite3_realloc64(f->buf, cap);
    if (b == NULL) return false;
    f->buf = b;
    f->cap = cap;
    return true;
}

static int sp_vfs_write(sqlite3_file *file, const void *data, int n, sqlite3_int64 off) {
    sp_vfs_file *f = (sp_vfs_file *)file;
    if (!f->is_wal || n <= 0) return f->real->pMethods->xWrite(f->real, data, n, off);
    size_t amount = (size_t)n;
    bool appends = f->len == 0 || off == f->buf_off + (sqlite3_int64)f->len;
    int rc = SQLITE_OK;
    if (!appends || !sp_vfs_reserve(f, amount)) {
        /* elsewhere in the file, too large, or no memory: the buffer first,
         * then this write as it came */
        rc = sp_vfs_flush(f);
        if (rc == SQLITE_OK && sp_vfs_reserve(f, amount)) {
            appends = true;
        } else {
            return rc != SQLITE_OK ? rc : f->real->pMethods->xWrite(f->real, data, n, off);
        }
    }
    if (f->len == 0) f->buf_off = off;
    memcpy(f->buf + f->len, data, amount);
    f->len += amount;
    if (f->commit_frame) return sp_vfs_flush(f); /* the commit frame's page */
    /* bytes 4..7 of a frame header: the database size after a commit, zero
     * on every other frame */
    if (amount == SP_VFS_FRAME_HEADER) {
        const uint8_t *h = data;
        f->commit_frame = (h[4] | h[5] | h[6] | h[7]) != 0;
    }
    return SQLITE_OK;
}

static int sp_vfs_truncate(sqlite3_file *file, sqlite3_int64 size) {
    sp_vfs_file *f = (sp_vfs_file *)file;
    int rc = sp_vfs_flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xTruncate(f->real, size);
}

static int sp_vfs_sync(sqlite3_file *file, int flags) {
    sp_vfs_file *f = (sp_vfs_file *)file;
    int rc = sp_vfs_flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xSync(f->real, flags);
}

static int sp_vfs_file_size(sqlite3_file *file, sqlite3_int64 *size) {
    sp_vfs_file *f = (sp_vfs_file *)file;
    int rc = sp_vfs_flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xFileSize(f->real, size);
}

static int sp_vfs_lock_file(sqlite3_file *file, int level) {
    sp_vfs_file *f = (sp_vfs_file *)file;
    return f->real->pMethods->xLock(f->real, level);
}

static int sp_vfs_unlock_file(sqlite3_file *file, int level) {
    sp_vfs_file *f = (sp_vfs_file *)file;
    return f->real->pMethods->xUnlock(f->real, level);
}

static int sp_vfs_check_reserved(sqlite3_file *file, int *out) {
    sp_vfs_file *f = (sp_vfs_file *)file;
    return f->real->pMethods->xCheckReservedLock(f->real, out);
}

static int sp_vfs_file_control(sqlite3_file *file, int op, void *arg) {
    sp_vfs_file *f = (sp_vfs_file *)file;
    int rc = sp_vfs_flush(f);
    if (rc != SQLITE_OK) return rc;
    if (op == SQLITE_FCNTL_VFSNAME) {
        /* SQLite's convention: prepend ours to what the layer below says */
        rc = f->real->pMethods->xFileControl(f->real, op, arg);
        char *below = rc == SQLITE_OK ? *(char **)arg : NULL;
        char *name = below ? sqlite3_mprintf("sp-wal/%z", below) : sqlite3_mprintf("sp-wal");
        *(char **)arg = name;
        return name ? SQLITE_OK : SQLITE_NOMEM;
    }
    return f->real->pMethods->xFileControl(f->real, op, arg);
}

static int sp_vfs_sector_size(sqlite3_file *file) {
    sp_vfs_file *f = (sp_vfs_file *)file;
    return f->real->pMethods->xSectorSize(f->real);
}

static int sp_vfs_device(sqlite3_file *file) {
    sp_vfs_file *f = (sp_vfs_file *)file;
    return f->real->pMethods->xDeviceCharacteristics(f->real);
}

static int sp_vfs_shm_map(sqlite3_file *file, int page, int size, int extend, void volatile **out) {
    sp_vfs_file *f = (sp_vfs_file *)file;
    return f->real->pMethods->xShmMap(f->real, page, size, extend, out);
}

static int sp_vfs_shm_lock(sqlite3_file *file, int offset, int n, int flags) {
    sp_vfs_file *f = (sp_vfs_file *)file;
    return f->real->pMethods->xShmLock(f->real, offset, n, flags);
}

/* The safety net of the header comment: only the connection's own thread
 * touches its WAL's buffer, and the peer link changes only at open and
 * close, which SQLite does not run concurrently with this connection's
 * commit. */
static void sp_vfs_shm_barrier(sqlite3_file *file) {
    sp_vfs_file *f = (sp_vfs_file *)file;
    sp_vfs_file *wal = f->peer;
    if (wal != NULL && wal->len > 0 && sp_vfs_flush(wal) != SQLITE_OK) abort();
    f->real->pMethods->xShmBarrier(f->real);
}

static int sp_vfs_shm_unmap(sqlite3_file *file, int delete_flag) {
    sp_vfs_file *f = (sp_vfs_file *)file;
    return f->real->pMethods->xShmUnmap(f->real, delete_flag);
}

static int sp_vfs_fetch(sqlite3_file *file, sqlite3_int64 off, int n, void **out) {
    sp_vfs_file *f = (sp_vfs_file *)file;
    int rc = sp_vfs_flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xFetch(f->real, off, n, out);
}

static int sp_vfs_unfetch(sqlite3_file *file, sqlite3_int64 off, void *p) {
    sp_vfs_file *f = (sp_vfs_file *)file;
    return f->real->pMethods->xUnfetch(f->real, off, p);
}

static int sp_vfs_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *file, int flags, int *out_flags) {
    (void)vfs;
    sp_vfs_file *f = (sp_vfs_file *)file;
    memset(f, 0, sizeof *f);
    f->real = (sqlite3_file *)(f + 1);
    int rc = sp_vfs_base->xOpen(sp_vfs_base, name, f->real, flags, out_flags);
    if (rc != SQLITE_OK || f->real->pMethods == NULL) {
        f->base.pMethods = NULL; /* SQLite then calls no method of ours */
        return rc;
    }
    int version = f->real->pMethods->iVersion;
    f->base.pMethods = version >= 3 ? &sp_vfs_methods_v3 : version == 2 ? &sp_vfs_methods_v2 : &sp_vfs_methods_v1;
    f->name = name;
    f->is_wal = (flags & SQLITE_OPEN_WAL) != 0;
    if (name == NULL || (flags & (SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_WAL)) == 0) return SQLITE_OK;
    pthread_mutex_lock(&sp_vfs_lock);
    if (f->is_wal) {
        const char *db = sqlite3_filename_database(name);
        for (sp_vfs_file *d = sp_vfs_dbs; d != NULL; d = d->next) {
            if (d->name == db && d->peer == NULL) {
                d->peer = f;
                f->peer = d;
                break;
            }
        }
    } else {
        f->next = sp_vfs_dbs;
        sp_vfs_dbs = f;
    }
    pthread_mutex_unlock(&sp_vfs_lock);
    return SQLITE_OK;
}

static int sp_vfs_delete(sqlite3_vfs *vfs, const char *name, int sync_dir) {
    (void)vfs;
    return sp_vfs_base->xDelete(sp_vfs_base, name, sync_dir);
}

static int sp_vfs_access(sqlite3_vfs *vfs, const char *name, int flags, int *out) {
    (void)vfs;
    return sp_vfs_base->xAccess(sp_vfs_base, name, flags, out);
}

static int sp_vfs_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out) {
    (void)vfs;
    return sp_vfs_base->xFullPathname(sp_vfs_base, name, n, out);
}

static void *sp_vfs_dlopen(sqlite3_vfs *vfs, const char *name) {
    (void)vfs;
    return sp_vfs_base->xDlOpen(sp_vfs_base, name);
}

static void sp_vfs_dlerror(sqlite3_vfs *vfs, int n, char *out) {
    (void)vfs;
    sp_vfs_base->xDlError(sp_vfs_base, n, out);
}

static void (*sp_vfs_dlsym(sqlite3_vfs *vfs, void *handle, const char *symbol))(void) {
    (void)vfs;
    return sp_vfs_base->xDlSym(sp_vfs_base, handle, symbol);
}

static void sp_vfs_dlclose(sqlite3_vfs *vfs, void *handle) {
    (void)vfs;
    sp_vfs_base->xDlClose(sp_vfs_base, handle);
}

static int sp_vfs_randomness(sqlite3_vfs *vfs, int n, char *out) {
    (void)vfs;
    return sp_vfs_base->xRandomness(sp_vfs_base, n, out);
}

static int sp_vfs_sleep(sqlite3_vfs *vfs, int us) {
    (void)vfs;
    return sp_vfs_base->xSleep(sp_vfs_base, us);
}

static int sp_vfs_current_time(sqlite3_vfs *vfs, double *out) {
    (void)vfs;
    return sp_vfs_base->xCurrentTime(sp_vfs_base, out);
}

static int sp_vfs_last_error(sqlite3_vfs *vfs, int n, char *out) {
    (void)vfs;
    return sp_vfs_base->xGetLastError ? sp_vfs_base->xGetLastError(sp_vfs_base, n, out) : 0;
}

static int sp_vfs_current_time64(sqlite3_vfs *vfs, sqlite3_int64 *out) {
    (void)vfs;
    return sp_vfs_base->xCurrentTimeInt64(sp_vfs_base, out);
}

static pthread_once_t sp_vfs_once = PTHREAD_ONCE_INIT;
static bool sp_vfs_ready;

static void sp_vfs_setup(void) {
    /* registering initialises SQLite: the page cache must be set before */
    (void)sp_sqlite_pcache_install();
    sp_vfs_base = sqlite3_vfs_find(NULL);
    /* the base must be the one this file was written against: version 2
     * or later (xCurrentTimeInt64) */
    if (sp_vfs_base == NULL || sp_vfs_base->iVersion < 2) return;
    sqlite3_io_methods m = {
        .iVersion = 3,
        .xClose = sp_vfs_close,
        .xRead = sp_vfs_read,
        .xWrite = sp_vfs_write,
        .xTruncate = sp_vfs_truncate,
        .xSync = sp_vfs_sync,
        .xFileSize = sp_vfs_file_size,
        .xLock = sp_vfs_lock_file,
        .xUnlock = sp_vfs_unlock_file,
        .xCheckReservedLock = sp_vfs_check_reserved,
        .xFileControl = sp_vfs_file_control,
        .xSectorSize = sp_vfs_sector_size,
        .xDeviceCharacteristics = sp_vfs_device,
        .xShmMap = sp_vfs_shm_map,
        .xShmLock = sp_vfs_shm_lock,
        .xShmBarrier = sp_vfs_shm_barrier,
        .xShmUnmap = sp_vfs_shm_unmap,
        .xFetch = sp_vfs_fetch,
        .xUnfetch = sp_vfs_unfetch,
    };
    /* a file whose own methods are older gets ours of the same version, so
     * SQLite never calls a method the file below lacks */
    sp_vfs_methods_v3 = m;
    sp_vfs_methods_v2 = m;
    sp_vfs_methods_v2.iVersion = 2;
    sp_vfs_methods_v1 = m;
    sp_vfs_methods_v1.iVersion = 1;
    sp_vfs = (sqlite3_vfs){
        .iVersion = 2,
        .szOsFile = (int)sizeof(sp_vfs_file) + sp_vfs_base->szOsFile,
        .mxPathname = sp_vfs_base->mxPathname,
        .zName = SP_SQLITE_VFS,
        .xOpen = sp_vfs_open,
        .xDelete = sp_vfs_delete,
        .xAccess = sp_vfs_access,
        .xFullPathname = sp_vfs_full_pathname,
        .xDlOpen = sp_vfs_dlopen,
        .xDlError = sp_vfs_dlerror,
        .xDlSym = sp_vfs_dlsym,
        .xDlClose = sp_vfs_dlclose,
        .xRandomness = sp_vfs_randomness,
        .xSleep = sp_vfs_sleep,
        .xCurrentTime = sp_vfs_current_time,
        .xGetLastError = sp_vfs_last_error,
        .xCurrentTimeInt64 = sp_vfs_current_time64,
    };
    sp_vfs_ready = sqlite3_vfs_register(&sp_vfs, 0) == SQLITE_OK;
}

const char *sp_sqlite_vfs(void) {
    (void)pthread_once(&sp_vfs_once, sp_vfs_setup);
    return sp_vfs_ready ? SP_SQLITE_VFS : NULL;
}
