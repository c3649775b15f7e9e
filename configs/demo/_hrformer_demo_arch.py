# A small HRFormer (4 branches of 16/32/64/128 channels, one module per stage, window 7) shared by the
# HRFormer demo configs: `{{_base_.hrformer_demo_arch}}` after listing this file in `_base_`.
hrformer_demo_arch = dict(
    drop_path_rate=0.0,
    stage1=dict(num_modules=1, num_branches=1, block='BOTTLENECK', num_blocks=[1], num_channels=[32]),
    stage2=dict(num_modules=1, num_branches=2, block='TRANSFORMER_BLOCK', num_blocks=[1, 1],
                num_channels=[16, 32], num_heads=[1, 2], num_mlp_ratios=[4, 4], num_window_sizes=[7, 7]),
    stage3=dict(num_modules=1, num_branches=3, block='TRANSFORMER_BLOCK', num_blocks=[1, 1, 1],
                num_channels=[16, 32, 64], num_heads=[1, 2, 4], num_mlp_ratios=[4, 4, 4],
                num_window_sizes=[7, 7, 7]),
    stage4=dict(num_modules=1, num_branches=4, block='TRANSFORMER_BLOCK', num_blocks=[1, 1, 1, 1],
                num_channels=[16, 32, 64, 128], num_heads=[1, 2, 4, 8], num_mlp_ratios=[4, 4, 4, 4],
                num_window_sizes=[7, 7, 7, 7], multiscale_output=True))
hrformer_demo_channels = [16, 32, 64, 128]
