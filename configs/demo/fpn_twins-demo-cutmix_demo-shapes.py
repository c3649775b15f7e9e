# The Twins demo segmenter trained with CutMix (boxes of another image of the batch, labels pasted with
# them): the switch for rerunning the attention-locality ablation of Toledo & Martinez on our backbones.
#   python tools/train.py configs/demo/fpn_twins-demo_demo-shapes.py --work-dir work_dirs/plain
#   python tools/train.py configs/demo/fpn_twins-demo-cutmix_demo-shapes.py --work-dir work_dirs/cutmix
#   python tools/analysis/attention_locality.py configs/demo/fpn_twins-demo_demo-shapes.py \
#       --compare work_dirs/plain/iter_400.pth work_dirs/cutmix/iter_400.pth --trust
_base_ = './fpn_twins-demo_demo-shapes.py'

model = dict(data_preprocessor=dict(type='backbones.CutMixSegDataPreProcessor',
                                    cutmix=dict(alpha=1.0, prob=1.0)))
