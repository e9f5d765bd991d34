"""The stream-processing worker: one faust app hosting the pipeline's agents."""
