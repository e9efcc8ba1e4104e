"""What a Loihi-class chip would compute and what it would cost, without the chip: the sampler loop around the
compiler's bit-exact simulator (``export.simulator``), event counts, chip mapping, the cost model and reports."""
