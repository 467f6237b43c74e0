"""Training: the options (:mod:`.config`), the objectives (:mod:`.losses`), the fit loop
(:mod:`.loop`), checkpoints (:mod:`.checkpoint`), schedules, batch streams, the spec of the flow a
run asks for (:mod:`.model`), plots, and ``flowforge train`` itself (:mod:`.run`).

Run directories, flow recipes, weights files and atomic writes are :mod:`flowforge.runs`, which
this package uses and which never imports it. The modules are imported by name
(``from flowforge.train.config import TrainConfig``); this package imports nothing, so
``import flowforge`` stays light.
"""
