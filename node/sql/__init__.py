"""SQL backends of a node: its statistics computed where its rows live."""
