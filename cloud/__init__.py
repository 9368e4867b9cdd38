"""facelink's cloud side: ``serving`` (the gRPC server and what it runs per frame), ``training`` (the codec's
training and export) and ``evaluation`` (the verification protocol, bit-exactness, provenance)."""
import warnings

# compressai imports torch_geometric, whose import calls the deprecated torch.jit.script: a FutureWarning about a
# third-party package's internals that no facelink user can act on, printed by every command that loads the codec.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
