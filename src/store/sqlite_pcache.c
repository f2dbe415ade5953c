/*
 * A thin layer over SQLite's own page cache that spares a commit a walk
 * through the whole cache.
 *
 * At the end of every transaction SQLite truncates its page cache to the
 * database's size, to drop pages past the end. The default cache decides
 * whether there is anything to drop from the largest page number it has
 * ever held since the last truncation, and when that is far past the end it
 * visits every hash bucket and every cached page. SQLite's B-tree, when a
 * split leaves new sibling pages out of order, moves one of them out of the
 * way through a temporary page number far past the end of the file (the
 * locking page), then to its final number. From then on the next commit
 * walks everything: with the writer's 64 MiB cache that is 16,000 pages,
 * about a hundred microseconds, on roughly one commit in ten when
 * callbacks insert webhook-ids at random places of their index.
 *
 * This layer keeps its own, tighter bound: the largest number of a page
 * the cache created, and the numbers pages were moved to beyond that,
 * forgetting those a page has since been moved away from. A truncation is
 * passed on only when one of them may lie at or past its limit. The bound
 * may say a page is there that is not (a page dropped or recycled inside
 * the cache is not seen here), which costs only a truncation passed on;
 * it never misses one that is, because a number enters the cache only by
 * a fetch that creates a page or by a move. Everything else goes straight
 * to SQLite's cache.
 *
 * Installed once per process before SQLite initialises (sp_sqlite_vfs()
 * and the store call it first); when SQLite is already initialised the
 * configuration is refused and SQLite's cache is used unchanged.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include <sqlite3.h>

#include "store/store_internal.h"

/* numbers moved to past the bound; more than this and the bound is unknown */
#define SP_PCACHE_MOVED 8

typedef struct {
    sqlite3_pcache *inner;
    unsigned created_max;             /* the largest number fetched with create */
    unsigned moved[SP_PCACHE_MOVED];  /* numbers moved to past created_max */
    unsigned n_moved;
    bool unknown;                     /* more moves than fit: pass the next truncation on */
} sp_pcache;

static sqlite3_pcache_methods2 sp_inner;
static _Atomic uint64_t sp_pcache_passed, sp_pcache_spared, sp_pcache_moved;

static int sp_pc_init(void *arg) {
    (void)arg;
    return sp_inner.xInit ? sp_inner.xInit(sp_inner.pArg) : SQLITE_OK;
}

static void sp_pc_shutdown(void *arg) {
    (void)arg;
    if (sp_inner.xShutdown) sp_inner.xShutdown(sp_inner.pArg);
}

static sqlite3_pcache *sp_pc_create(int page_size, int extra_size, int purgeable) {
    sp_pcache *c = sqlite3_malloc64(sizeof *c);
    if (c == NULL) return NULL;
    memset(c, 0, sizeof *c);
    c->inner = sp_inner.xCreate(page_size, extra_size, purgeable);
    if (c->inner == NULL) {
        sqlite3_free(c);
        return NULL;
    }
    return (sqlite3_pcache *)c;
}

static void sp_pc_cachesize(sqlite3_pcache *p, int n) {
    sp_inner.xCachesize(((sp_pcache *)p)->inner, n);
}

static int sp_pc_pagecount(sqlite3_pcache *p) {
    return sp_inner.xPagecount(((sp_pcache *)p)->inner);
}

static sqlite3_pcache_page *sp_pc_fetch(sqlite3_pcache *p, unsigned key, int create) {
    sp_pcache *c = (sp_pcache *)p;
    sqlite3_pcache_page *page = sp_inner.xFetch(c->inner, key, create);
    if (page != NULL && create && key > c->created_max) c->created_max = key;
    return page;
}

static void sp_pc_unpin(sqlite3_pcache *p, sqlite3_pcache_page *page, int discard) {
    sp_inner.xUnpin(((sp_pcache *)p)->inner, page, discard);
}

static void sp_pc_rekey(sqlite3_pcache *p, sqlite3_pcache_page *page, unsigned old_key, unsigned new_key) {
    sp_pcache *c = (sp_pcache *)p;
    sp_inner.xRekey(c->inner, page, old_key, new_key);
    for (unsigned i = 0; i < c->n_moved; i++) {
        if (c->moved[i] == old_key) {
            c->moved[i] = c->moved[--c->n_moved];
            break;
        }
    }
    if (new_key <= c->created_max) return;
    atomic_fetch_add_explicit(&sp_pcache_moved, 1, memory_order_relaxed);
    if (c->n_moved < SP_PCACHE_MOVED) c->moved[c->n_moved++] = new_key;
    else c->unknown = true;
}

static void sp_pc_truncate(sqlite3_pcache *p, unsigned limit) {
    sp_pcache *c = (sp_pcache *)p;
    bool maybe = c->unknown || c->created_max >= limit;
    for (unsigned i = 0; i < c->n_moved && !maybe; i++) maybe = c->moved[i] >= limit;
    if (!maybe) {
        atomic_fetch_add_explicit(&sp_pcache_spared, 1, memory_order_relaxed);
        return;
    }
    atomic_fetch_add_explicit(&sp_pcache_passed, 1, memory_order_relaxed);
    sp_inner.xTruncate(c->inner, limit);
    /* every page left is numbered below the limit */
    unsigned below = limit > 0 ? limit - 1 : 0;
    if (c->unknown) {
        c->created_max = below;
        c->n_moved = 0;
        c->unknown = false;
        return;
    }
    if (c->created_max > below) c->created_max = below;
    unsigned kept = 0;
    for (unsigned i = 0; i < c->n_moved; i++)
        if (c->moved[i] <= below && c->moved[i] > c->created_max) c->moved[kept++] = c->moved[i];
    c->n_moved = kept;
}

static void sp_pc_destroy(sqlite3_pcache *p) {
    sp_pcache *c = (sp_pcache *)p;
    sp_inner.xDestroy(c->inner);
    sqlite3_free(c);
}

static void sp_pc_shrink(sqlite3_pcache *p) {
    sp_inner.xShrink(((sp_pcache *)p)->inner);
}

static bool sp_pcache_installed;

static void sp_pcache_install_once(void) {
    sqlite3_pcache_methods2 inner;
    memset(&inner, 0, sizeof inner);
    if (sqlite3_config(SQLITE_CONFIG_GETPCACHE2, &inner) != SQLITE_OK || inner.xCreate == NULL ||
        inner.xFetch == NULL || inner.xRekey == NULL || inner.xTruncate == NULL || inner.xDestroy == NULL)
        return;
    sp_inner = inner;
    static const sqlite3_pcache_methods2 ours = {
        1,           NULL,         sp_pc_init,  sp_pc_shutdown, sp_pc_create,   sp_pc_cachesize, sp_pc_pagecount,
        sp_pc_fetch, sp_pc_unpin,  sp_pc_rekey, sp_pc_truncate, sp_pc_destroy, sp_pc_shrink,
    };
    sp_pcache_installed = sqlite3_config(SQLITE_CONFIG_PCACHE2, &ours) == SQLITE_OK;
}

bool sp_sqlite_pcache_install(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    (void)pthread_once(&once, sp_pcache_install_once);
    return sp_pcache_installed;
}

void sp_sqlite_pcache_counts(uint64_t *passed, uint64_t *spared, uint64_t *moved) {
    *passed = atomic_load_explicit(&sp_pcache_passed, memory_order_relaxed);
    *spared = atomic_load_explicit(&sp_pcache_spared, memory_order_relaxed);
    *moved = atomic_load_explicit(&sp_pcache_moved, memory_order_relaxed);
}
