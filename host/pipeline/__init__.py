"""The host's main job, `deploy push` and its relatives: choose a target, compile (or reuse), ship, build, verify.

Nothing here imports TVM at module level: a push whose bundle is already in the host compile cache never pays
for it.
"""
