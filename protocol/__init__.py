"""The secure-sum rounds and what they carry: codec, messages, the state machines of
each role (masking and Paillier), the manifest, the in-memory simulator. No I/O."""
