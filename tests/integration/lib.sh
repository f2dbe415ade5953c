# shellcheck shell=bash
# Shared by the shell integration tests (test_cli.sh, test_interop_java.sh,
# test_interop_python.sh, test_keys_cli.sh). Each of them used to open with
# its own copy of the same preamble: where the sealpost binary is, a scratch
# directory removed on exit, pass/fail counters with ok/bad/finish, and
# helpers that run a command and judge its exit status and output. They
# source this instead, from beside themselves:
#
#   . "$(dirname "$0")/lib.sh"
#
# Afterwards: $here (this directory), $src (the source tree), $cli (the
# sealpost binary: $SP_CLI, else $SP_BUILD_DIR/sealpost, else
# $src/build/sealpost), $tmp (the scratch directory), $out and $err (where
# the expect_* helpers leave a command's stdout and stderr), and the counters
# $pass and $fail. Env: SP_CLI, SP_SOURCE_DIR, SP_BUILD_DIR (set by ctest).

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="${SP_SOURCE_DIR:-$(cd "$here/../.." && pwd)}"
cli="${SP_CLI:-${SP_BUILD_DIR:-$src/build}/sealpost}"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
out="$tmp/out"
err="$tmp/err"

# ---- counting -----------------------------------------------------------------
pass=0
fail=0
# ok [NAME]: a check passed; NAME, when given, is printed. Always succeeds, so
# `CHECK && ok || bad ...` reports a failure only when CHECK failed.
ok() {
  pass=$((pass + 1))
  if [ -n "${1:-}" ]; then echo "ok     $1"; fi
  return 0
}
# bad NAME [DETAIL]: a check failed.
bad() {
  fail=$((fail + 1))
  echo "FAIL   $1${2:+: $2}"
}
# finish LABEL: prints "LABEL: N passed, M failed"; succeeds when nothing
# failed and something passed (a script that checked nothing has not passed).
finish() {
  echo "$1: $pass passed, $fail failed"
  [ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
}
# need_cli LABEL: ends the script as failed when there is no sealpost binary.
need_cli() {
  if [ ! -x "$cli" ]; then
    bad "sealpost binary not found at $cli"
    finish "$1" || exit 1
  fi
}

# ---- running commands -----------------------------------------------------------
# run_to STDOUT STDERR CMD...: runs CMD with its output in those files;
# returns CMD's exit status (without tripping set -e in the caller's test).
run_to() {
  local to_out=$1 to_err=$2
  shift 2
  local rc=0
  "$@" >"$to_out" 2>"$to_err" || rc=$?
  return $rc
}

# expect_ok NAME CMD...: CMD exits 0. Its stdout is left in $out for the
# caller to look at; stdin is the caller's (expect_ok ... <FILE).
expect_ok() {
  local name=$1
  shift
  local rc=0
  "$@" >"$out" 2>"$err" || rc=$?
  if [ "$rc" -eq 0 ]; then
    ok "$name"
  else
    bad "$name" "exit $rc: $(head -c 400 "$err")"
  fi
}

# expect_fail NAME CMD...: the CLI's error contract. A non-zero exit below 128
# (128 and up is a crash or a signal, which also catches sanitizer reports
# on error paths), exactly one non-blank line on stderr, nothing on stdout.
# stdin is the caller's (expect_fail ... <FILE).
expect_fail() {
  local name=$1
  shift
  local rc=0
  "$@" >"$out" 2>"$err" || rc=$?
  local lines
  lines=$(nlines "$err")
  if [ "$rc" -eq 0 ]; then
    bad "$name" "exit 0 (stdout: $(head -c 100 "$out" | tr -c '[:print:]' '.'))"
  elif [ "$rc" -ge 128 ]; then
    bad "$name" "exit $rc: crashed or killed by a signal; stderr: $(head -c 400 "$err")"
  elif [ "$lines" -ne 1 ] || ! grep -q '[^[:space:]]' "$err"; then
    bad "$name" "stderr should be exactly one line, has $lines: $(head -c 400 "$err" | tr '\n' '|')"
  elif [ -s "$out" ]; then
    bad "$name" "wrote $(wc -c <"$out") bytes to stdout on failure"
  else
    ok "$name"
  fi
}

# expect_fail_with NAME PATTERN CMD...: CMD fails and says PATTERN on stderr
# (an error code, say). stdin is the caller's.
expect_fail_with() {
  local name=$1 pattern=$2
  shift 2
  if "$@" >"$out" 2>"$err"; then
    bad "$name" "succeeded"
  elif grep -q -- "$pattern" "$err"; then
    ok "$name"
  else
    bad "$name" "stderr lacks '$pattern': $(cat "$err")"
  fi
}

# ---- small tools ------------------------------------------------------------------
# randhex N: N random bytes as lowercase hex.
randhex() { od -An -v -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }
# nlines FILE: its number of lines, a last one without a newline included.
nlines() { awk 'END { print NR }' "$1"; }
