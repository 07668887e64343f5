# Kaldi-style option parsing, sourced by a script after it sets its defaults:
#   --name value  or  --name=value  sets the shell variable "name" (dashes become underscores).
# Only variables the script defined may be set, so a typo is an error rather than ignored; the name is
# checked before its value, so a misspelt or unknown option is reported as such (not as "needs a value").
# Switches: a name the script lists in $switches (e.g. switches="strict") also takes the forms
#   --name (sets true) and --no-name (sets false), as the Python commands spell them.
# --help prints $help_message and the current values. Positional arguments remain in "$@".
while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      echo -e "${help_message:-}" >&2
      exit 0 ;;
    --*) ;;
    *) break ;;
  esac
  _opt=${1%%=*}
  _name=$(echo "${_opt#--}" | tr - _)
  _switch=
  if [[ " ${switches:-} " == *" $_name "* ]]; then _switch=true
  elif [[ $_name == no_* && " ${switches:-} " == *" ${_name#no_} "* ]]; then _name=${_name#no_}; _switch=false; fi
  if ! [[ $_name =~ ^[A-Za-z][A-Za-z0-9_]*$ ]]; then echo "$0: bad option name $_opt" >&2; exit 2; fi
  if [ -z "$(eval "echo \${$_name+set}")" ] || [ "$_name" = switches ]; then
    echo "$0: unknown option $_opt (run $0 --help for the list)" >&2
    exit 2
  fi
  if [[ $1 == --*=* ]]; then
    if [ "$_switch" = false ]; then echo "$0: $_opt takes no value" >&2; exit 2; fi
    _val=${1#*=}; shift
  elif [ -n "$_switch" ]; then
    _val=$_switch; shift
  else
    if [ $# -lt 2 ]; then echo "$0: option $_opt needs a value" >&2; exit 2; fi
    _val=$2; shift 2
  fi
  eval "$_name=\$_val"
done
unset _opt _val _name _switch
