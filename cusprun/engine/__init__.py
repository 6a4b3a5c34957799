"""One engine for every pass over a model: layer by layer, whole on the device or streamed from
its safetensors checkpoint, with recorders plugged in (impact statistics, compensation Grams)
and final hidden states scored through a chunked LM head (losses, multiple choice)."""
from cusprun.engine.batches import Batch, HiddenStore, document_batches, length_batches, pad_right
from cusprun.engine.logprobs import Picks, pick_logprobs, token_logprobs
from cusprun.engine.model import LayeredModel
from cusprun.engine.placement import STREAMING, Streaming, decide, model_bytes, open_model
from cusprun.engine.pruned import MaskSession, mask_model, plan_edit, prune_layer
from cusprun.engine.run import Recorder, Variant, run_pass

__all__ = ["STREAMING", "Batch", "HiddenStore", "LayeredModel", "MaskSession", "Picks", "Recorder",
           "Streaming", "Variant", "decide", "document_batches", "length_batches", "mask_model",
           "model_bytes", "open_model", "pad_right", "pick_logprobs", "plan_edit", "prune_layer", "run_pass",
           "token_logprobs"]
