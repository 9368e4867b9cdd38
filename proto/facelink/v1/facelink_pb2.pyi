from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RecognizeRequest(_message.Message):
    __slots__ = ("id", "bitstream", "source", "top_k", "device_id", "sequence")
    ID_FIELD_NUMBER: _ClassVar[int]
    BITSTREAM_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    id: str
    bitstream: bytes
    source: str
    top_k: int
    device_id: str
    sequence: int
    def __init__(self, id: _Optional[str] = ..., bitstream: _Optional[bytes] = ..., source: _Optional[str] = ..., top_k: _Optional[int] = ..., device_id: _Optional[str] = ..., sequence: _Optional[int] = ...) -> None: ...

class RecognizeResponse(_message.Message):
    __slots__ = ("id", "source", "result", "error", "replayed")
    ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    id: str
    source: str
    result: Recognition
    error: Error
    replayed: bool
    def __init__(self, id: _Optional[str] = ..., source: _Optional[str] = ..., result: _Optional[_Union[Recognition, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class Match(_message.Message):
    __slots__ = ("identity", "similarity")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    identity: str
    similarity: float
    def __init__(self, identity: _Optional[str] = ..., similarity: _Optional[float] = ...) -> None: ...

class Recognition(_message.Message):
    __slots__ = ("face_found", "identity", "similarity", "matches", "width", "height", "bytes", "bpp", "model_id", "decode_ms", "recognize_ms", "domain_weights")
    FACE_FOUND_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    BPP_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    RECOGNIZE_MS_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    face_found: bool
    identity: str
    similarity: float
    matches: _containers.RepeatedCompositeFieldContainer[Match]
    width: int
    height: int
    bytes: int
    bpp: float
    model_id: str
    decode_ms: float
    recognize_ms: float
    domain_weights: _containers.RepeatedCompositeFieldContainer[DomainWeight]
    def __init__(self, face_found: _Optional[bool] = ..., identity: _Optional[str] = ..., similarity: _Optional[float] = ..., matches: _Optional[_Iterable[_Union[Match, _Mapping]]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., bytes: _Optional[int] = ..., bpp: _Optional[float] = ..., model_id: _Optional[str] = ..., decode_ms: _Optional[float] = ..., recognize_ms: _Optional[float] = ..., domain_weights: _Optional[_Iterable[_Union[DomainWeight, _Mapping]]] = ...) -> None: ...

class DomainWeight(_message.Message):
    __slots__ = ("domain", "weight")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    domain: str
    weight: float
    def __init__(self, domain: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message")
    class Code(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        CODE_UNSPECIFIED: _ClassVar[Error.Code]
        INVALID_BITSTREAM: _ClassVar[Error.Code]
        UNKNOWN_MODEL: _ClassVar[Error.Code]
        FRAME_TOO_LARGE: _ClassVar[Error.Code]
        INVALID_ARGUMENT: _ClassVar[Error.Code]
        INTERNAL: _ClassVar[Error.Code]
    CODE_UNSPECIFIED: Error.Code
    INVALID_BITSTREAM: Error.Code
    UNKNOWN_MODEL: Error.Code
    FRAME_TOO_LARGE: Error.Code
    INVALID_ARGUMENT: Error.Code
    INTERNAL: Error.Code
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: Error.Code
    message: str
    def __init__(self, code: _Optional[_Union[Error.Code, str]] = ..., message: _Optional[str] = ...) -> None: ...

class EnrollRequest(_message.Message):
    __slots__ = ("identity", "bitstream", "image", "source_name")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    BITSTREAM_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_NAME_FIELD_NUMBER: _ClassVar[int]
    identity: str
    bitstream: bytes
    image: bytes
    source_name: str
    def __init__(self, identity: _Optional[str] = ..., bitstream: _Optional[bytes] = ..., image: _Optional[bytes] = ..., source_name: _Optional[str] = ...) -> None: ...

class EnrollResponse(_message.Message):
    __slots__ = ("identity", "samples", "recognizer")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    RECOGNIZER_FIELD_NUMBER: _ClassVar[int]
    identity: str
    samples: int
    recognizer: str
    def __init__(self, identity: _Optional[str] = ..., samples: _Optional[int] = ..., recognizer: _Optional[str] = ...) -> None: ...

class ListIdentitiesRequest(_message.Message):
    __slots__ = ("all_recognizers",)
    ALL_RECOGNIZERS_FIELD_NUMBER: _ClassVar[int]
    all_recognizers: bool
    def __init__(self, all_recognizers: _Optional[bool] = ...) -> None: ...

class Sample(_message.Message):
    __slots__ = ("id", "recognizer", "enrolled_at", "enrolled_by", "source_name")
    ID_FIELD_NUMBER: _ClassVar[int]
    RECOGNIZER_FIELD_NUMBER: _ClassVar[int]
    ENROLLED_AT_FIELD_NUMBER: _ClassVar[int]
    ENROLLED_BY_FIELD_NUMBER: _ClassVar[int]
    SOURCE_NAME_FIELD_NUMBER: _ClassVar[int]
    id: int
    recognizer: str
    enrolled_at: float
    enrolled_by: str
    source_name: str
    def __init__(self, id: _Optional[int] = ..., recognizer: _Optional[str] = ..., enrolled_at: _Optional[float] = ..., enrolled_by: _Optional[str] = ..., source_name: _Optional[str] = ...) -> None: ...

class Identity(_message.Message):
    __slots__ = ("name", "samples", "sample_records", "created_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RECORDS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    samples: int
    sample_records: _containers.RepeatedCompositeFieldContainer[Sample]
    created_at: float
    def __init__(self, name: _Optional[str] = ..., samples: _Optional[int] = ..., sample_records: _Optional[_Iterable[_Union[Sample, _Mapping]]] = ..., created_at: _Optional[float] = ...) -> None: ...

class ListIdentitiesResponse(_message.Message):
    __slots__ = ("identities", "recognizer")
    IDENTITIES_FIELD_NUMBER: _ClassVar[int]
    RECOGNIZER_FIELD_NUMBER: _ClassVar[int]
    identities: _containers.RepeatedCompositeFieldContainer[Identity]
    recognizer: str
    def __init__(self, identities: _Optional[_Iterable[_Union[Identity, _Mapping]]] = ..., recognizer: _Optional[str] = ...) -> None: ...

class DeleteIdentityRequest(_message.Message):
    __slots__ = ("identity",)
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    identity: str
    def __init__(self, identity: _Optional[str] = ...) -> None: ...

class DeleteIdentityResponse(_message.Message):
    __slots__ = ("identity", "samples_removed")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_REMOVED_FIELD_NUMBER: _ClassVar[int]
    identity: str
    samples_removed: int
    def __init__(self, identity: _Optional[str] = ..., samples_removed: _Optional[int] = ...) -> None: ...

class RemoveSampleRequest(_message.Message):
    __slots__ = ("identity", "sample_id")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    identity: str
    sample_id: int
    def __init__(self, identity: _Optional[str] = ..., sample_id: _Optional[int] = ...) -> None: ...

class RemoveSampleResponse(_message.Message):
    __slots__ = ("identity", "samples", "identity_deleted")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_DELETED_FIELD_NUMBER: _ClassVar[int]
    identity: str
    samples: int
    identity_deleted: bool
    def __init__(self, identity: _Optional[str] = ..., samples: _Optional[int] = ..., identity_deleted: _Optional[bool] = ...) -> None: ...

class ModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CodecModel(_message.Message):
    __slots__ = ("name", "model_id", "architecture", "domains")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    DOMAINS_FIELD_NUMBER: _ClassVar[int]
    name: str
    model_id: str
    architecture: str
    domains: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., model_id: _Optional[str] = ..., architecture: _Optional[str] = ..., domains: _Optional[_Iterable[str]] = ...) -> None: ...

class ModelInfoResponse(_message.Message):
    __slots__ = ("server_version", "bitstream_format_version", "models", "default_model", "recognizer", "detector", "match_threshold", "max_frame_bytes", "crop_template_ids")
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    BITSTREAM_FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MODEL_FIELD_NUMBER: _ClassVar[int]
    RECOGNIZER_FIELD_NUMBER: _ClassVar[int]
    DETECTOR_FIELD_NUMBER: _ClassVar[int]
    MATCH_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAME_BYTES_FIELD_NUMBER: _ClassVar[int]
    CROP_TEMPLATE_IDS_FIELD_NUMBER: _ClassVar[int]
    server_version: str
    bitstream_format_version: int
    models: _containers.RepeatedCompositeFieldContainer[CodecModel]
    default_model: str
    recognizer: str
    detector: str
    match_threshold: float
    max_frame_bytes: int
    crop_template_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, server_version: _Optional[str] = ..., bitstream_format_version: _Optional[int] = ..., models: _Optional[_Iterable[_Union[CodecModel, _Mapping]]] = ..., default_model: _Optional[str] = ..., recognizer: _Optional[str] = ..., detector: _Optional[str] = ..., match_threshold: _Optional[float] = ..., max_frame_bytes: _Optional[int] = ..., crop_template_ids: _Optional[_Iterable[int]] = ...) -> None: ...
