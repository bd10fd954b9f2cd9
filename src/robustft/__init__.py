"""robustft: reproducible robust fine-tuning (AutoLoRa, TWINS, vanilla RFT, CLAT)."""

__version__ = "0.1.0"
