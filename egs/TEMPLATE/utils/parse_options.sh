# Kaldi-style option parsing, sourced by a script after it sets its defaults:
#   --name value  or  --name=value  sets the shell variable "name" (dashes become underscores).
# Only variables the script defined may be set, so a typo is an error rather than ignored.
# --help prints $help_message and the current values. Positional arguments remain in "$@".
while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      echo -e "${help_message:-}" >&2
      exit 0 ;;
    --*=*)
      _opt=${1%%=*}; _val=${1#*=}; shift ;;
    --*)
      _opt=$1
      if [ $# -lt 2 ]; then echo "$0: option $_opt needs a value" >&2; exit 2; fi
      _val=$2; shift 2 ;;
    *) break ;;
  esac
  _name=$(echo "${_opt#--}" | tr - _)
  if ! [[ $_name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then echo "$0: bad option name $_opt" >&2; exit 2; fi
  if [ -z "$(eval "echo \${$_name+set}")" ]; then
    echo "$0: unknown option $_opt (run $0 --help for the list)" >&2
    exit 2
  fi
  eval "$_name=\$_val"
done
unset _opt _val _name
