/*
 * Functions the codebase never calls: unbounded copies, formatted writes that
 * cannot report truncation, and parsers that cannot report failure. Poisoning
 * them turns any use into a compile error. Included last by sp_core.h, after
 * every system header, so only our own code is affected.
 */
#ifndef SP_BANNED_H
#define SP_BANNED_H

#if defined(__GNUC__) && !defined(SP_ALLOW_BANNED)
#pragma GCC poison strcpy strcat sprintf vsprintf gets strncpy strncat strtok atoi atol atoll stpcpy
#endif

#endif
