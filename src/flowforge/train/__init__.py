"""Training: the options (:mod:`.config`), the fit loop (:mod:`.loop`), checkpoints
(:mod:`.checkpoint`, :mod:`.atomic`), schedules, batch streams, the trained model's recipe
(:mod:`.model`), plots, and ``flowforge train`` itself (:mod:`.run`).

The modules are imported by name (``from flowforge.train.config import TrainConfig``); this
package imports nothing, so ``import flowforge`` stays light.
"""
