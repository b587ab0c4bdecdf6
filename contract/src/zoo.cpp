#include "bbits/contract/zoo.h"

#include <algorithm>
#include <cmath>

namespace bbits::contract {

namespace {

// The reference's data loaders, per data set. The resize and crop of the
// ImageNet loader happen before the model and are not recorded.
//
// ImageNet (resnet18, mobilenetv2): benchmarks/image_net/mixed_precision_dataloader.py,
// val_transforms (lines 76-83): Resize(size + 24), CenterCrop(size), ToTensor
// (pixel / 255), normalize (lines 63-65); size 224
// (benchmarks/image_net/gated_mixed_precision.py line 539).
Preprocessing imagenet() { return {1.0 / 255.0, {0.485f, 0.456f, 0.406f}, {0.229f, 0.224f, 0.225f}}; }
// CIFAR-10 (vgg7, resnet18-small): benchmarks/cifar/cifar10_data_loader.py,
// transform_test (lines 25-32): ToTensor, Normalize((0.4914, 0.4822, 0.4465),
// (0.2023, 0.1994, 0.2010)).
Preprocessing cifar10() { return {1.0 / 255.0, {0.4914f, 0.4822f, 0.4465f}, {0.2023f, 0.1994f, 0.2010f}}; }
// MNIST (lenet5): benchmarks/mnist/mnist_data_loader.py lines 11-13 and
// 18-20: transforms.ToTensor() only, pixel / 255 without normalisation.
Preprocessing mnist() { return {1.0 / 255.0, {0.0f}, {1.0f}}; }

struct Builder {
  Graph g;
  const ZooOptions& opt;
  std::string last;  // the latest node (or the input)

  Builder(const std::string& model, const ZooOptions& o, std::vector<int64_t> default_shape, Preprocessing pre)
      : opt(o) {
    g.model = model;
    g.input.shape = o.input_shape.empty() ? std::move(default_shape) : o.input_shape;
    if (g.input.shape.size() != 3)
      throw CheckpointError("input shape must be [C, H, W], got " + shape_str(g.input.shape));
    for (int64_t d : g.input.shape)
      if (d < 1) throw CheckpointError("input shape " + shape_str(g.input.shape) + " is empty");
    if (!(o.width > 0)) throw CheckpointError("width must be positive");
    const Preprocessing& p = o.preprocessing ? *o.preprocessing : pre;
    const auto channels = static_cast<size_t>(g.input.shape[0]);
    auto per_channel = [&](const std::vector<float>& v, const char* what) {
      if (v.size() == 1) return std::vector<float>(channels, v[0]);
      if (v.size() != channels)
        throw CheckpointError(std::string(what) + " has " + std::to_string(v.size()) + " values for " +
                              std::to_string(channels) + " channels");
      return v;
    };
    g.input.pixel_scale = p.pixel_scale;
    g.input.mean = per_channel(p.mean, "mean");
    g.input.std = per_channel(p.std, "std");
    last = g.input.name;
  }

  int64_t classes(int64_t def) const { return opt.num_classes > 0 ? opt.num_classes : def; }
  std::vector<int64_t> shape_of(const std::string& name) const { return infer_shapes(g).of(g, name); }

  Node& conv(const std::string& name, const std::string& in, int64_t cin, int64_t cout, int k, int stride, int pad,
             int groups, bool bn, Act act) {
    Node n;
    n.name = name;
    n.op = OpKind::Conv2d;
    n.inputs = {in};
    n.in_channels = cin;
    n.out_channels = cout;
    n.kernel_h = n.kernel_w = k;
    n.stride_h = n.stride_w = stride;
    n.pad_h = n.pad_w = pad;
    n.groups = groups;
    n.bias = !bn;
    n.bn = bn;
    n.activation = act;
    n.weight_quant = opt.quantize;
    n.prune = opt.quantize && opt.prune && (groups == 1 || opt.prune_depthwise);
    n.act_quant = opt.quantize;
    n.act_signed = n.act_quant && act == Act::None;
    g.nodes.push_back(n);
    last = name;
    return g.nodes.back();
  }
  Node& linear(const std::string& name, const std::string& in, int64_t fin, int64_t fout, bool bn, Act act) {
    Node n;
    n.name = name;
    n.op = OpKind::Linear;
    n.inputs = {in};
    n.in_features = fin;
    n.out_features = fout;
    n.bias = !bn;
    n.bn = bn;
    n.activation = act;
    n.weight_quant = opt.quantize;
    n.prune = opt.quantize && opt.prune;
    n.act_quant = opt.quantize;
    n.act_signed = n.act_quant && act == Act::None;
    g.nodes.push_back(n);
    last = name;
    return g.nodes.back();
  }
  void pool(const std::string& name, OpKind op, int k, int s, int p) {
    Node n;
    n.name = name;
    n.op = op;
    n.inputs = {last};
    n.kernel_h = n.kernel_w = k;
    n.stride_h = n.stride_w = s;
    n.pad_h = n.pad_w = p;
    g.nodes.push_back(n);
    last = name;
  }
  void simple(const std::string& name, OpKind op) {
    Node n;
    n.name = name;
    n.op = op;
    n.inputs = {last};
    g.nodes.push_back(n);
    last = name;
  }
  void add(const std::string& name, const std::string& a, const std::string& b, Act act) {
    Node n;
    n.name = name;
    n.op = OpKind::Add;
    n.inputs = {a, b};
    n.activation = act;
    n.act_quant = opt.quantize;
    n.act_signed = n.act_quant && act == Act::None;
    g.nodes.push_back(n);
    last = name;
  }
  // The classifier's last layer: not pruned, float logits (the reference's
  // set_full_precision_logits).
  Graph logits(const std::string& name, const std::string& in, int64_t fin, int64_t fout) {
    Node& n = linear(name, in, fin, fout, false, Act::None);
    n.prune = false;
    n.act_quant = false;
    n.act_signed = false;
    g.outputs = {n.name};
    infer_shapes(g);
    return g;
  }
};

int64_t scaled(int64_t c, double w) { return std::max<int64_t>(1, static_cast<int64_t>(std::llround(c * w))); }

// MobileNetV2's channel rounding: a multiple of 8, never below 90% of the value.
int64_t make_divisible(double v, int64_t d = 8) {
  int64_t nv = std::max<int64_t>(d, static_cast<int64_t>(v + d / 2.0) / d * d);
  if (nv < 0.9 * v) nv += d;
  return nv;
}

// benchmarks/image_net/models/mnist_models.py: LeNet5Quantized.
Graph lenet5(const ZooOptions& o) {
  Builder b("lenet5", o, {1, 28, 28}, mnist());
  b.conv("features.0", b.last, b.g.input.shape[0], 32, 5, 1, 0, 1, false, Act::Relu);
  b.pool("features.1", OpKind::MaxPool, 2, 2, 0);
  b.conv("features.2", b.last, 32, 64, 5, 1, 0, 1, false, Act::Relu);
  b.pool("features.3", OpKind::MaxPool, 2, 2, 0);
  b.simple("flatten", OpKind::Flatten);
  b.linear("classifier.0", "flatten", b.shape_of("flatten")[0], 512, false, Act::Relu);
  return b.logits("classifier.1", "classifier.0", 512, b.classes(10));
}

// benchmarks/image_net/models/cifar_models.py: VGGQuantized (BN after every
// convolution and after the first classifier layer).
Graph vgg7(const ZooOptions& o) {
  Builder b("vgg7", o, {3, 32, 32}, cifar10());
  const int64_t widths[] = {scaled(128, o.width), scaled(128, o.width), 0, scaled(256, o.width),
                            scaled(256, o.width), 0, scaled(512, o.width), scaled(512, o.width), 0};
  int64_t cin = b.g.input.shape[0];
  for (int i = 0; i < 9; ++i) {
    const std::string name = "features." + std::to_string(i);
    if (widths[i] == 0) {
      b.pool(name, OpKind::MaxPool, 2, 2, 0);
    } else {
      b.conv(name, b.last, cin, widths[i], 3, 1, 1, 1, true, Act::Relu);
      cin = widths[i];
    }
  }
  b.simple("flatten", OpKind::Flatten);
  const int64_t hidden = scaled(1024, o.width);
  b.linear("classifier.0", "flatten", b.shape_of("flatten")[0], hidden, true, Act::Relu);
  return b.logits("classifier.1", "classifier.0", hidden, b.classes(10));
}

// benchmarks/image_net/models/resnet_quantized.py: QuantizedResNet over
// torchvision's resnet18 (features.0 stem, features.1 max pool, features.2-5
// the stages of QuantizedBlocks). The small variant has a 3x3 stride-1 stem
// and no max pooling, its stages features.1-4 (as the reference's CIFAR
// ResNet, benchmarks/image_net/models/cifar_models.py).
Graph resnet18(const ZooOptions& o, bool small) {
  Builder b(small ? "resnet18-small" : "resnet18", o, small ? std::vector<int64_t>{3, 32, 32}
                                                            : std::vector<int64_t>{3, 224, 224},
            small ? cifar10() : imagenet());
  int64_t cin = scaled(64, o.width);
  int stage0 = 1;
  if (small) {
    b.conv("features.0", b.last, b.g.input.shape[0], cin, 3, 1, 1, 1, true, Act::Relu);
  } else {
    b.conv("features.0", b.last, b.g.input.shape[0], cin, 7, 2, 3, 1, true, Act::Relu);
    b.pool("features.1", OpKind::MaxPool, 3, 2, 1);
    stage0 = 2;
  }
  const int64_t widths[] = {scaled(64, o.width), scaled(128, o.width), scaled(256, o.width), scaled(512, o.width)};
  for (int l = 0; l < 4; ++l) {
    for (int blk = 0; blk < 2; ++blk) {
      const std::string p = "features." + std::to_string(stage0 + l) + "." + std::to_string(blk);
      const int stride = (l > 0 && blk == 0) ? 2 : 1;
      const int64_t cout = widths[l];
      const std::string in = b.last;
      std::string shortcut = in;
      b.conv(p + ".features.0", in, cin, cout, 3, stride, 1, 1, true, Act::Relu);
      b.conv(p + ".features.1", p + ".features.0", cout, cout, 3, 1, 1, 1, true, Act::None);
      if (stride != 1 || cin != cout) {
        b.conv(p + ".downsample.0", in, cin, cout, 1, stride, 0, 1, true, Act::None);
        shortcut = p + ".downsample.0";
      }
      b.add(p, p + ".features.1", shortcut, Act::Relu);
      cin = cout;
    }
  }
  b.simple("avgpool", OpKind::GlobalAvgPool);
  b.simple("flatten", OpKind::Flatten);
  return b.logits("fc", "flatten", cin, b.classes(small ? 10 : 1000));
}

// benchmarks/image_net/models/mobilenetv2/mobilenet_v2_quantized.py:
// QuantizedMobileNetV2 (features.0 stem, features.1-17 inverted residual
// blocks conv.{0,1,2}, features.18 the last 1x1 convolution, features.19 the
// average pooling, classifier.1 the logits after the dropout classifier.0).
// The final AvgPool2d(input / 32) is a global average pooling.
Graph mobilenetv2(const ZooOptions& o) {
  Builder b("mobilenetv2", o, {3, 224, 224}, imagenet());
  const bool small = b.g.input.shape[1] < 64;
  int64_t cin = make_divisible(32 * o.width);
  b.conv("features.0", b.last, b.g.input.shape[0], cin, 3, small ? 1 : 2, 1, 1, true, Act::Relu6);
  // (expansion t, channels c, repeats n, stride s) of the MobileNetV2 paper.
  const int setting[7][4] = {{1, 16, 1, 1}, {6, 24, 2, 2}, {6, 32, 3, 2}, {6, 64, 4, 2},
                             {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
  int idx = 1;
  for (const auto& s : setting) {
    const int64_t cout = make_divisible(s[1] * o.width);
    for (int i = 0; i < s[2]; ++i, ++idx) {
      int stride = i == 0 ? s[3] : 1;
      if (small && idx <= 3) stride = 1;  // small inputs keep their resolution in the first blocks
      const int64_t hidden = cin * s[0];
      const std::string p = "features." + std::to_string(idx);
      const std::string in = b.last;
      int k = 0;
      if (s[0] != 1) b.conv(p + ".conv." + std::to_string(k++), b.last, cin, hidden, 1, 1, 0, 1, true, Act::Relu6);
      b.conv(p + ".conv." + std::to_string(k++), b.last, hidden, hidden, 3, stride, 1, static_cast<int>(hidden), true,
             Act::Relu6);
      b.conv(p + ".conv." + std::to_string(k++), b.last, hidden, cout, 1, 1, 0, 1, true, Act::None);
      if (stride == 1 && cin == cout) b.add(p, in, b.last, Act::None);
      cin = cout;
    }
  }
  const int64_t last = o.width > 1.0 ? make_divisible(1280 * o.width) : 1280;
  b.conv("features." + std::to_string(idx), b.last, cin, last, 1, 1, 0, 1, true, Act::Relu6);
  b.simple("features." + std::to_string(idx + 1), OpKind::GlobalAvgPool);
  b.simple("flatten", OpKind::Flatten);
  return b.logits("classifier.1", "flatten", last, b.classes(1000));
}

}  // namespace

const std::vector<std::string>& zoo_names() {
  static const std::vector<std::string> names{"lenet5", "vgg7", "resnet18", "resnet18-small", "mobilenetv2"};
  return names;
}

Graph make_graph(const std::string& arch, const ZooOptions& options) {
  try {
    if (arch == "lenet5") return lenet5(options);
    if (arch == "vgg7") return vgg7(options);
    if (arch == "resnet18") return resnet18(options, false);
    if (arch == "resnet18-small") return resnet18(options, true);
    if (arch == "mobilenetv2") return mobilenetv2(options);
  } catch (const CheckpointError& e) {
    throw CheckpointError("model zoo: " + arch + ": " + e.what());
  }
  std::string all;
  for (const auto& n : zoo_names()) all += (all.empty() ? "" : ", ") + n;
  throw CheckpointError("unknown architecture '" + arch + "' (" + all + ")");
}

}  // namespace bbits::contract
