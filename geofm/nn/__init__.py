"""Geometric neural-network layers (Flax NNX), curvature convention k<0 / 0 / >0.

  curvature.py  `Curvature`: learnable signed curvature, sign-constrained per geometry
  layers.py     `GeoGCNConv` (κ-GCN, midpoint / tangent / local aggregation),
                `GeoGATConv` (geometric attention, midpoint aggregation)
  cat.py        `CATBlock` (curvature-adaptive transformer block) and its pure branch kernels

Import from the submodules (this package imports nothing eagerly, so `geofm.kg` can use
`geofm.nn.curvature` without pulling in the layers).
"""
