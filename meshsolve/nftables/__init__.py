"""nftables as input: the three forms users have, one syntax model, a canonical renderer."""
