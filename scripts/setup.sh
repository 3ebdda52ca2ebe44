#!/usr/bin/env bash
# One-command setup for a fresh machine (Debian 12, rustup, root). Idempotent: re-running
# it is safe and takes about a second when everything is already there.
# Installs: the pinned userspace toolchain, the dated nightly (+ rust-src) that compiles the
# eBPF crate, and bpf-linker built against that nightly's own LLVM.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=toolchain.env
source "$here/toolchain.env"

export PATH="$HOME/.cargo/bin:$PATH"
say() { printf 'setup: %s\n' "$*"; }

if ! command -v rustup >/dev/null 2>&1; then
  say "rustup is missing: install it first (https://rustup.rs), then re-run this script" >&2
  exit 1
fi

# tasktrace before 2026-12-01 renamed finished reports over their destination: as root,
# `--json /dev/null` left a regular file there, and every later reader of /dev/null (cargo's
# rustc probes among them) read old output. A machine carrying that damage gets its device
# back.
if [ ! -c /dev/null ] && [ "$(id -u)" -eq 0 ]; then
  say "warning: /dev/null is not a character device (a regular file?): recreating it" >&2
  rm -f /dev/null && mknod -m 666 /dev/null c 1 3
fi

have_toolchain() { rustup toolchain list | grep -q "^$1"; }

if ! have_toolchain "$STABLE_TOOLCHAIN"; then
  say "installing Rust $STABLE_TOOLCHAIN"
  rustup toolchain install "$STABLE_TOOLCHAIN" --profile minimal -c clippy,rustfmt
fi
if ! have_toolchain "$EBPF_TOOLCHAIN" || ! rustup component list --toolchain "$EBPF_TOOLCHAIN" --installed | grep -q rust-src; then
  say "installing $EBPF_TOOLCHAIN with rust-src (compiles the eBPF crate)"
  rustup toolchain install "$EBPF_TOOLCHAIN" --profile minimal -c rust-src
fi

for tc in $CORPUS_TOOLCHAINS; do
  if ! have_toolchain "$tc"; then
    say "installing Rust $tc (builds part of the real-program corpus)"
    rustup toolchain install "$tc" --profile minimal
  fi
done

# bpf-linker must link the same LLVM as the nightly: build it against the nightly's libLLVM.
stamp_dir="$HOME/.cache/tasktrace"
stamp="$stamp_dir/bpf-linker.stamp"
want="$BPF_LINKER_VERSION $EBPF_TOOLCHAIN $BPF_LINKER_LLVM"
if ! command -v bpf-linker >/dev/null 2>&1 || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "building bpf-linker $BPF_LINKER_VERSION against $EBPF_TOOLCHAIN's LLVM (about a minute)"
  sysroot=$(rustc +"$EBPF_TOOLCHAIN" --print sysroot)
  llvm=$(ls "$sysroot"/lib/libLLVM.so.* | head -n 1)
  prefix="$stamp_dir/llvm-$EBPF_TOOLCHAIN"
  mkdir -p "$prefix/lib"
  ln -sf "$llvm" "$prefix/lib/libLLVM.so"
  ln -sf "$llvm" "$prefix/lib/"
  LLVM_PREFIX="$prefix" cargo +"$STABLE_TOOLCHAIN" install "bpf-linker@$BPF_LINKER_VERSION" \
    --locked --no-default-features --features "$BPF_LINKER_LLVM" --force
  echo "$want" > "$stamp"
fi

# Debian packages the tests use: bpftool (no tasktrace program may outlive tasktrace) and
# chromium (the HTML report must render in a real browser); wrk, the load generator of
# `cargo xtask bench http`; tmux, the terminal `tasktrace top`'s e2e test drives; prometheus, the
# server that scrapes `--prometheus` in its e2e test; golang-go, whose `go tool pprof` reads
# `--pprof`; and QEMU with what virtme-ng builds its initramfs from
# (busybox, depmod), to boot the kernels of `cargo xtask kernels`; libdebuginfod1, the
# client library tasktrace loads to fetch debug files from the servers DEBUGINFOD_URLS names.
missing=()
command -v bpftool >/dev/null 2>&1 || missing+=(bpftool)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v go >/dev/null 2>&1 || missing+=(golang-go)
command -v qemu-system-x86_64 >/dev/null 2>&1 || missing+=(qemu-system-x86)
[ -x /bin/busybox ] || missing+=(busybox-static)
command -v depmod >/dev/null 2>&1 || [ -x /sbin/depmod ] || missing+=(kmod)
ldconfig -p 2>/dev/null | grep -q 'libdebuginfod\.so\.1' || missing+=(libdebuginfod1)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]} (Debian packages)"
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    say "warning: not root, cannot apt-get install ${missing[*]}; the tests and benches need them" >&2
  fi
fi

# virtme-ng (PyPI) boots a kernel package on the host's filesystem (`cargo xtask kernels`).
if ! command -v vng >/dev/null 2>&1; then
  say "installing virtme-ng $VIRTME_NG_VERSION (boots Debian's kernels for the kernel tests)"
  python3 -m pip install -q --root-user-action=ignore "virtme-ng==$VIRTME_NG_VERSION"
  command -v pyenv >/dev/null 2>&1 && pyenv rehash
fi
if ! command -v vng >/dev/null 2>&1; then
  say "warning: vng is not on PATH after installing virtme-ng; cargo xtask kernels needs it" >&2
fi

# Kernel support: tasktrace needs BPF ring buffers and attach cookies on perf-event uprobes
# (Linux >= 5.15); from 6.10 it attaches through uprobe_multi links (faster to detach).
kernel=$(uname -r)
major=${kernel%%.*}; rest=${kernel#*.}; minor=${rest%%.*}
if [ "$major" -lt 5 ] || { [ "$major" -eq 5 ] && [ "$minor" -lt 15 ]; }; then
  say "warning: kernel $kernel is older than 5.15; tasktrace needs attach cookies on uprobes" >&2
fi
say "ready (Rust $STABLE_TOOLCHAIN, $EBPF_TOOLCHAIN, bpf-linker $BPF_LINKER_VERSION)"
