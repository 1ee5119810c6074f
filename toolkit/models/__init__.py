"""The networks: ResNetV2 built from a stage spec (resnet_v2)."""
