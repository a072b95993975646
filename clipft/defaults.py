"""Defaults that several commands, configs and library functions share, defined once. Plain
values in a module that imports nothing, so the command line reads them without loading torch."""

TITLE_WEIGHT = 0.5  # image+title fusion: the title's weight wherever none is given
CHUNK_SIZE = 50_000  # rows read, scored and written at a time: memory stays flat for catalogues of any length
BATCH_SIZE = 64  # photos per encoding batch
DEVICE = "auto"  # cuda when available, else cpu
# clipft curve's methods, in the order they are trained and drawn (clipft.commands.curve.METHODS)
CURVE_METHODS = ("fine-tuned (labels)", "fine-tuned (templates)", "linear probe", "GDA", "Tip-Adapter")
