"""gRPC client for the facelink server: streaming recognition, enrollment, model information."""
from __future__ import annotations

from typing import Iterable, Iterator

import grpc

from facelink.v1 import facelink_pb2 as pb
from facelink.v1 import facelink_pb2_grpc as pb_grpc



class Client:
    def __init__(self, target: str, timeout: float = 30.0, max_message_bytes: int = 64 << 20):
        self.channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", max_message_bytes),
                                                               ("grpc.max_receive_message_length", max_message_bytes)])
        self.stub = pb_grpc.FaceLinkStub(self.channel)
        self.timeout = timeout

    def wait_ready(self, timeout: float = 30.0) -> None:
        grpc.channel_ready_future(self.channel).result(timeout=timeout)

    def model_info(self) -> pb.ModelInfoResponse:
        return self.stub.GetModelInfo(pb.ModelInfoRequest(), timeout=self.timeout)

    def enroll(self, identity: str, *, bitstream: bytes | None = None, image: bytes | None = None,
               source_name: str = "") -> pb.EnrollResponse:
        if (bitstream is None) == (image is None):
            raise ValueError("give exactly one of bitstream= or image=")
        req = pb.EnrollRequest(identity=identity, source_name=source_name)
        if bitstream is not None:
            req.bitstream = bitstream
        else:
            req.image = image
        return self.stub.Enroll(req, timeout=self.timeout)

    def identities(self) -> pb.ListIdentitiesResponse:
        return self.stub.ListIdentities(pb.ListIdentitiesRequest(), timeout=self.timeout)

    def recognize_stream(self, requests: Iterable[pb.RecognizeRequest]) -> Iterator[pb.RecognizeResponse]:
        """Send requests as they are produced; yield responses as they arrive."""
        return self.stub.Recognize(iter(requests))

    def close(self) -> None:
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def request(rid: str, data: bytes, source: str = "", top_k: int = 0) -> pb.RecognizeRequest:
    return pb.RecognizeRequest(id=rid, bitstream=data, source=source, top_k=top_k)
