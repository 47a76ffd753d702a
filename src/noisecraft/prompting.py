"""Transitional: the request helpers before `noisecraft.pipelines` (removed at the end of the move)."""

from dataclasses import replace

from noisecraft.pipelines import Request
from noisecraft.pipelines import conditioned as _conditioned


def conditioned(run, request: Request, num: int, seed: int | None = None):
    return _conditioned(run, replace(request, num=num, seed=seed or 0), draw=seed is not None)


def describe_request(request: Request) -> dict:
    return request.describe()


def preview_request(config, dataset, num: int) -> Request:
    from noisecraft.pipelines.preview import preview_request as _preview

    return _preview(config, dataset, num)
