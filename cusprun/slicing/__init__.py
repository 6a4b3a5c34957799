"""Physical slicing of a dense checkpoint into a smaller standard one, and loading it back.

Importing this package registers model_type 'cusprun_per_layer' with transformers' AutoConfig /
AutoModelForCausalLM (per-layer experts load without remote code)."""
from cusprun.slicing.loading import load_expert
from cusprun.models.per_layer import MODEL_TYPE, CusprunPerLayerConfig, per_layer_classes, register
from cusprun.slicing.slicer import slice_checkpoint
from cusprun.slicing.validate import LayerWidths, removed_params, validate_plan

__all__ = ["MODEL_TYPE", "CusprunPerLayerConfig", "LayerWidths", "load_expert", "per_layer_classes",
           "register", "removed_params", "slice_checkpoint", "validate_plan"]
