# A small S3 (widths 32/64/128/256 = 32 x heads, depths 1/1/2/1, windows 7: a shifted block in stage 2) shared by
# the S3 demo configs: `{{_base_.s3_demo_arch}}` after listing this file in `_base_`.
s3_demo_arch = dict(embed_dim=[32, 64, 128, 256], depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8],
                    window_size=[7, 7, 7, 7], mlp_ratio=[4.0, 4.0, 4.0, 4.0])
s3_demo_channels = [32, 64, 128, 256]
