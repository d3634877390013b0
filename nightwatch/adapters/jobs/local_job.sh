# The wrapper of one local Job. LocalJobGateway runs it as
#   SH -c "<this file>" nightwatch-job JOB_DIR MKDIR MV ATTEMPTS COMMAND [ARG...]
# SH, MKDIR and MV are absolute paths nightwatch resolved at start-up in the system
# directories, so the Job's own PATH (its env) cannot hide them or change what runs here;
# the rest is shell syntax and built-ins. COMMAND itself is found through the Job's PATH.
#
# The claim comes first: of all wrappers ever started for a Job (by its creator, or by a
# replica adopting it after the creator died mid-start), exactly one gets past it. The
# subshell keeps a command named like a shell built-in (exit, exec, cd) from touching the
# wrapper itself.
d=$1 mkdir=$2 mv=$3 tries=$4
shift 4
"$mkdir" "$d/claim" 2>/dev/null || exit 0
echo $$ > "$d/pid" || exit 1
# A cancel writes "cancelled", then reads "pid": one of the two sees the other.
[ -e "$d/cancelled" ] && exit 0
while :; do
  ( "$@" )
  code=$?
  case $code in 0) break ;; esac
  tries=$((tries - 1))
  case $((tries > 0)) in 0) break ;; esac
done
echo "$code" > "$d/exit.tmp" && "$mv" -f "$d/exit.tmp" "$d/exit"
