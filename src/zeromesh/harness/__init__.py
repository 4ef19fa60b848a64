"""The churn soak harness (``zeromesh soak``, ``matrix``, ``hang-demo``): the
seed's ``runme.sh`` + ``repeat.sh`` + ``top`` + ``pstack``, with verdicts.

Modules, from the bottom: :mod:`.model` (scenarios, settings, records, exit
codes; stdlib only), :mod:`.procs` and :mod:`.children` (processes that die
with us, stopped by PID), :mod:`.stacks` (native stacks of a hung process),
:mod:`.hangdemo` and :mod:`.churn` (what runs in the children),
:mod:`.commands`, :mod:`.slots` (the churn and its watchdog),
:mod:`.sampling` (a long-lived peer under watch), :mod:`.stats` and
:mod:`.verdict`, :mod:`.plots`, :mod:`.report`, :mod:`.progress`,
:mod:`.soak` (the orchestrator) and :mod:`.matrix`.

Importing this package imports nothing: psutil, rich, matplotlib and scipy
(the ``soak`` extra) are imported by the modules that need them only.
"""
