/*
 * Macros shared by every public header: symbol visibility, the attribute that
 * makes ignoring an error a compile error, and C++ linkage guards.
 */
#ifndef SEALPOST_COMMON_H
#define SEALPOST_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__) || defined(__clang__)
#define SP_API __attribute__((visibility("default")))
#define SP_MUST_CHECK __attribute__((warn_unused_result))
#else
#define SP_API
#define SP_MUST_CHECK
#endif

#ifdef __cplusplus
#define SP_BEGIN_DECLS extern "C" {
#define SP_END_DECLS }
#else
#define SP_BEGIN_DECLS
#define SP_END_DECLS
#endif

#define SEALPOST_VERSION_STRING "0.1.0"

#endif
