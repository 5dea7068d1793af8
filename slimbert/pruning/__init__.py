"""Finding and removing structure: ``gates.py`` (hard-concrete gates, sizes), ``cost.py`` (what a
structure costs), ``masks.py`` (hard masks on a gated copy), ``methods/`` (each method's
``find_structure``), ``collapse.py`` + ``ext.py`` (gated model -> compact model, C++ gather)."""
