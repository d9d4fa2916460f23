# bash completion for pciback. Written by pciback.cli.docs from the CLI's parsers.
# Install: source it, or copy it to /usr/share/bash-completion/completions/pciback
_pciback() {
    local cur prev words paths path='' i w
    cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"
    # The command path so far: the words that are commands, not options or values.
    for ((i = 1; i < COMP_CWORD; i++)); do
        w="${COMP_WORDS[i]}"
        case "$w" in -*) continue ;; esac
        _pciback_words "${path:+$path }$w"
        [ -n "$words$paths" ] && path="${path:+$path }$w"
    done
    _pciback_words "$path"
    case " $paths " in
        *" $prev "*) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
_pciback_words() {
    case "$1" in
        "") words="daemon demo slot permissive interrupt-control quirk irq-handlers list attach detach assignable-add assignable-remove assignable-list view audit trace journal completion -h --help --version --socket --config"; paths="--socket --config" ;;
        "daemon") words="-h --help --config"; paths="--config" ;;
        "demo") words="-h --help --log-level"; paths="" ;;
        "slot") words="add remove list -h --help --socket --config"; paths="--socket --config" ;;
        "permissive") words="add remove list -h --help --socket --config"; paths="--socket --config" ;;
        "interrupt-control") words="add remove list -h --help --socket --config"; paths="--socket --config" ;;
        "quirk") words="add list -h --help --socket --config"; paths="--socket --config" ;;
        "irq-handlers") words="-h --help --socket --config"; paths="--socket --config" ;;
        "list") words="-h --help --socket --config --json"; paths="--socket --config" ;;
        "attach") words="-h --help --socket --config --vdev --permissive --allow-interrupt-control"; paths="--socket --config" ;;
        "detach") words="-h --help --socket --config"; paths="--socket --config" ;;
        "assignable-add") words="-h --help --socket --config"; paths="--socket --config" ;;
        "assignable-remove") words="-h --help --socket --config -r --rebind"; paths="--socket --config" ;;
        "assignable-list") words="-h --help --socket --config"; paths="--socket --config" ;;
        "view") words="-h --help --permissive --hide-cap --hide-ext-cap --quirk --host-irq --format --address -o --output"; paths="-o --output" ;;
        "audit") words="-h --help --permissive --hide-cap --hide-ext-cap --policy --diff --format --address -o --output --socket --config"; paths="--policy -o --output --socket --config" ;;
        "trace") words="record replay -h --help"; paths="" ;;
        "trace record") words="-h --help --device -o --output --max-ops --seconds --socket --config"; paths="-o --output --socket --config" ;;
        "trace replay") words="-h --help --dump --policy --device"; paths="--dump --policy" ;;
        "journal") words="-h --help --state-dir --config -n --lines --json"; paths="--state-dir --config" ;;
        "completion") words="bash -h --help"; paths="" ;;
        *) words=""; paths="" ;;
    esac
}
complete -F _pciback pciback
