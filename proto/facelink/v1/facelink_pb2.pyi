from collections.abc import Iterable as _Iterable
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar

from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper

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
    def __init__(self, id: str | None = ..., bitstream: bytes | None = ..., source: str | None = ..., top_k: int | None = ..., device_id: str | None = ..., sequence: int | None = ...) -> None: ...

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
    def __init__(self, id: str | None = ..., source: str | None = ..., result: Recognition | _Mapping | None = ..., error: Error | _Mapping | None = ..., replayed: bool | None = ...) -> None: ...

class Match(_message.Message):
    __slots__ = ("identity", "similarity")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    identity: str
    similarity: float
    def __init__(self, identity: str | None = ..., similarity: float | None = ...) -> None: ...

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
    def __init__(self, face_found: bool | None = ..., identity: str | None = ..., similarity: float | None = ..., matches: _Iterable[Match | _Mapping] | None = ..., width: int | None = ..., height: int | None = ..., bytes: int | None = ..., bpp: float | None = ..., model_id: str | None = ..., decode_ms: float | None = ..., recognize_ms: float | None = ..., domain_weights: _Iterable[DomainWeight | _Mapping] | None = ...) -> None: ...

class DomainWeight(_message.Message):
    __slots__ = ("domain", "weight")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    domain: str
    weight: float
    def __init__(self, domain: str | None = ..., weight: float | None = ...) -> None: ...

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
    def __init__(self, code: Error.Code | str | None = ..., message: str | None = ...) -> None: ...

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
    def __init__(self, identity: str | None = ..., bitstream: bytes | None = ..., image: bytes | None = ..., source_name: str | None = ...) -> None: ...

class EnrollResponse(_message.Message):
    __slots__ = ("identity", "samples", "recognizer")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    RECOGNIZER_FIELD_NUMBER: _ClassVar[int]
    identity: str
    samples: int
    recognizer: str
    def __init__(self, identity: str | None = ..., samples: int | None = ..., recognizer: str | None = ...) -> None: ...

class ListIdentitiesRequest(_message.Message):
    __slots__ = ("all_recognizers",)
    ALL_RECOGNIZERS_FIELD_NUMBER: _ClassVar[int]
    all_recognizers: bool
    def __init__(self, all_recognizers: bool | None = ...) -> None: ...

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
    def __init__(self, id: int | None = ..., recognizer: str | None = ..., enrolled_at: float | None = ..., enrolled_by: str | None = ..., source_name: str | None = ...) -> None: ...

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
    def __init__(self, name: str | None = ..., samples: int | None = ..., sample_records: _Iterable[Sample | _Mapping] | None = ..., created_at: float | None = ...) -> None: ...

class ListIdentitiesResponse(_message.Message):
    __slots__ = ("identities", "recognizer")
    IDENTITIES_FIELD_NUMBER: _ClassVar[int]
    RECOGNIZER_FIELD_NUMBER: _ClassVar[int]
    identities: _containers.RepeatedCompositeFieldContainer[Identity]
    recognizer: str
    def __init__(self, identities: _Iterable[Identity | _Mapping] | None = ..., recognizer: str | None = ...) -> None: ...

class DeleteIdentityRequest(_message.Message):
    __slots__ = ("identity",)
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    identity: str
    def __init__(self, identity: str | None = ...) -> None: ...

class DeleteIdentityResponse(_message.Message):
    __slots__ = ("identity", "samples_removed")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_REMOVED_FIELD_NUMBER: _ClassVar[int]
    identity: str
    samples_removed: int
    def __init__(self, identity: str | None = ..., samples_removed: int | None = ...) -> None: ...

class RemoveSampleRequest(_message.Message):
    __slots__ = ("identity", "sample_id")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    identity: str
    sample_id: int
    def __init__(self, identity: str | None = ..., sample_id: int | None = ...) -> None: ...

class RemoveSampleResponse(_message.Message):
    __slots__ = ("identity", "samples", "identity_deleted")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_DELETED_FIELD_NUMBER: _ClassVar[int]
    identity: str
    samples: int
    identity_deleted: bool
    def __init__(self, identity: str | None = ..., samples: int | None = ..., identity_deleted: bool | None = ...) -> None: ...

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
    def __init__(self, name: str | None = ..., model_id: str | None = ..., architecture: str | None = ..., domains: _Iterable[str] | None = ...) -> None: ...

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
    def __init__(self, server_version: str | None = ..., bitstream_format_version: int | None = ..., models: _Iterable[CodecModel | _Mapping] | None = ..., default_model: str | None = ..., recognizer: str | None = ..., detector: str | None = ..., match_threshold: float | None = ..., max_frame_bytes: int | None = ..., crop_template_ids: _Iterable[int] | None = ...) -> None: ...
