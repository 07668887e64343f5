# portable_cmdline ARGS...: this recipe's command (./run.sh ARGS) as RESULTS.md records it, so that it
# means the same on any machine: the corpus is named by its db.sh variable ("$IEMOCAP", for an argument
# equal to that variable's value or below it), never by this machine's path; other words are quoted
# for the shell where needed. Run from the recipe's folder (ser.sh is). serkit.scoring.results_md.portable_text
# then makes any other path relative to the recipe.
portable_cmdline() {
  local words=(./run.sh) arg var value
  for arg in "$@"; do
    for var in $(sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/\1/p' db.sh 2>/dev/null); do
      value=$(. ./db.sh >/dev/null 2>&1; printf %s "${!var-}") || value=
      if [ -n "$value" ] && { [ "$arg" = "$value" ] || [ "${arg#"$value"/}" != "$arg" ]; }; then
        words+=("\"\$$var${arg#"$value"}\""); continue 2
      fi
    done
    if [[ $arg =~ ^[A-Za-z0-9_./:=+,@%-]+$ ]]; then words+=("$arg"); else words+=("'${arg//\'/\'\\\'\'}'"); fi
  done
  echo "${words[*]}"
}

# record_recipe_command ARGS...: a recipe's run.sh calls it with the user's own arguments, before it
# adds the corpus's defaults, so that RESULTS.md shows what the user typed (which reruns the same
# experiment: run.sh adds the same defaults again) rather than the defaults followed by the user's words.
record_recipe_command() {
  export SERKIT_RECIPE_COMMAND
  SERKIT_RECIPE_COMMAND=$(portable_cmdline "$@")
}
