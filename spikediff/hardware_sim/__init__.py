"""What a Loihi-class chip would compute and what it would cost, without the chip: Loihi's integer neuron
arithmetic and a batched, bit-exact simulator of our fixed-point networks (the cost model comes next)."""
