#!/usr/bin/env python3
"""A stock grpcio client of the seed contract, as the original tutorial's client is written.

Stubs are generated from proto/webcam_streaming.proto with grpcio-tools at run time (nothing
camcast-specific), frames are decoded with Pillow. Exits non-zero unless N frames arrive and
every one decodes to the expected size.

    seed_client.py HOST:PORT FRAMES WIDTHxHEIGHT

A locked-down camera is reached the way any grpcio program would: SEED_CA=cert.pem switches
to grpc.secure_channel trusting that certificate (name checked: "localhost"), SEED_TOKEN=T
sends `authorization: Bearer T` as call metadata. SEED_EXPECT=UNAUTHENTICATED turns the run
into a check that the server refuses the call with that status.
"""
import os
import io
import pathlib
import subprocess
import sys
import tempfile


def generate_stubs(out_dir: pathlib.Path) -> None:
    proto_dir = pathlib.Path(__file__).resolve().parents[2] / "proto"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_dir}",
         f"--python_out={out_dir}", f"--grpc_python_out={out_dir}",
         str(proto_dir / "webcam_streaming.proto")],
        check=True,
    )
    sys.path.insert(0, str(out_dir))


def open_channel(grpc, target):
    ca = os.environ.get("SEED_CA")
    if not ca:
        return grpc.insecure_channel(target)
    creds = grpc.ssl_channel_credentials(root_certificates=pathlib.Path(ca).read_bytes())
    return grpc.secure_channel(target, creds, options=[("grpc.ssl_target_name_override", "localhost")])


def main() -> int:
    target, frames, size = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    want = tuple(int(v) for v in size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        generate_stubs(pathlib.Path(tmp))
        import grpc
        from PIL import Image
        import webcam_streaming_pb2 as pb
        import webcam_streaming_pb2_grpc as pb_grpc

        channel = open_channel(grpc, target)
        grpc.channel_ready_future(channel).result(timeout=10)
        stub = pb_grpc.WebcamStreamingStub(channel)
        token = os.environ.get("SEED_TOKEN")
        metadata = [("authorization", f"Bearer {token}")] if token else None
        responses = stub.StartWebcamStreaming(
            pb.ClientName(clientName="grpcio-tutorial-client"), metadata=metadata)
        expect = os.environ.get("SEED_EXPECT")
        if expect:
            try:
                next(responses)
            except grpc.RpcError as e:
                print(f"grpcio seed client: refused with {e.code().name}: {e.details()}")
                return 0 if e.code().name == expect else 1
            print(f"grpcio seed client: got a frame, expected {expect}")
            return 1
        got = 0
        for response in responses:
            image = Image.open(io.BytesIO(response.imageBytes))
            image.load()  # full decode, not just the header
            if image.format != "JPEG" or image.size != want:
                print(f"frame {got}: {image.format} {image.size}, want JPEG {want}")
                return 1
            got += 1
            if got == frames:
                break
        responses.cancel()
        channel.close()
    print(f"grpcio seed client: {got} JPEG frames of {want[0]}x{want[1]} decoded")
    return 0 if got == frames else 1


if __name__ == "__main__":
    sys.exit(main())
