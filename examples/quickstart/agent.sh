#!/bin/sh
# A stand-in for a coding agent: an interactive loop that echoes what you type and shows
# what the sandbox looks like from inside. POSIX sh only, so it runs on any image.

motd=/opt/quickstart/motd
echo "quickstart agent (pid $$) in $(pwd)"
[ -r "$motd" ] && echo "motd: $(cat "$motd")"
echo "${GREETING:-no GREETING set}"
echo "commands: env, whoami, ls, ps, net, help, exit; anything else is echoed"

while printf 'agent> ' && IFS= read -r line; do
  case "$line" in
    "") ;;
    exit|quit) break ;;
    env) env | sort | grep -E '^(COOP_|HOME=|PATH=|TERM=|GREETING=|USER=)' ;;
    whoami) echo "uid=$(id -u) gid=$(id -g) host=$(hostname 2>/dev/null || cat /etc/hostname)" ;;
    ls) ls -la /workspace ;;
    ps) for p in /proc/[0-9]*; do
          printf '%s %s\n' "${p#/proc/}" "$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null)"
        done ;;
    net) cat /proc/net/dev ;;
    help) echo "commands: env, whoami, ls, ps, net, help, exit" ;;
    *) printf 'you said: %s\n' "$line" ;;
  esac
done
echo "agent: bye"
