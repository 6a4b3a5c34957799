"""The scale benchmark's parts (benchmarks.bench_scale): random-weight checkpoints of any size
written shard by shard (checkpoint), the generated corpora and the build spec (workload), the
watch kept on a running build (monitor) and the check of the published expert (verify)."""
