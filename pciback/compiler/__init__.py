"""The policy compiler, a build-time tool only: parse -> build the declarations -> resolve
groups -> check (every diagnostic) -> elaborate (every value, once) -> emit / report / linux
(formatting only)."""
