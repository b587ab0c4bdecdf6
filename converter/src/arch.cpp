#include "bbits/converter/arch.h"

#include <algorithm>
#include <cmath>

namespace bbits::converter {

namespace {

struct Builder {
  Graph g;
  std::string last;  // name of the latest tensor

  Node& conv(const std::string& name, const std::string& in, int64_t cin, int64_t cout, int k, int stride, int pad,
             int groups, bool bias, bool bn, Act act) {
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
    n.bias = bias;
    n.bn = bn;
    n.bn_eps = 1e-5;
    n.activation = act;
    n.weight_quant = true;
    n.prune = true;
    n.act_quant = true;
    n.act_signed = act == Act::None;
    g.nodes.push_back(n);
    last = name;
    return g.nodes.back();
  }
  Node& linear(const std::string& name, const std::string& in, int64_t fin, int64_t fout, bool bias, bool bn, Act act) {
    Node n;
    n.name = name;
    n.op = OpKind::Linear;
    n.inputs = {in};
    n.in_features = fin;
    n.out_features = fout;
    n.bias = bias;
    n.bn = bn;
    n.activation = act;
    n.weight_quant = true;
    n.prune = true;
    n.act_quant = true;
    n.act_signed = act == Act::None;
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
    n.act_quant = true;
    n.act_signed = act == Act::None;
    g.nodes.push_back(n);
    last = name;
  }
  // The classifier's last layer: not pruned, float logits (the reference's
  // set_full_precision_logits).
  void logits(Node& n) {
    n.prune = false;
    n.act_quant = false;
    n.act_signed = false;
    g.outputs = {n.name};
  }
};

// The preprocessing each template records is what the reference
// implementation's data loader does for that network's data set (the table
// in docs/CONVERTER.md lists the same with file and line).
//
// ImageNet (resnet18, mobilenetv2): benchmarks/image_net/mixed_precision_dataloader.py,
// val_transforms (lines 76-83): Resize(size + 24), CenterCrop(size), ToTensor
// (pixel / 255), normalize (lines 63-65): mean [0.485, 0.456, 0.406], std
// [0.229, 0.224, 0.225]; size 224 (benchmarks/image_net/gated_mixed_precision.py
// line 539). The resize and crop happen before the model and are not recorded.
void imagenet_input(Graph& g) {
  g.input.shape = {3, 224, 224};
  g.input.pixel_scale = 1.0 / 255.0;
  g.input.mean = {0.485f, 0.456f, 0.406f};
  g.input.std = {0.229f, 0.224f, 0.225f};
}

}  // namespace

const std::vector<std::string>& arch_names() {
  static const std::vector<std::string> names{"lenet5", "vgg7", "resnet18", "mobilenetv2"};
  return names;
}

Graph make_arch_graph(const std::string& arch) {
  Builder b;
  b.g.model = arch;
  b.last = "input";
  if (arch == "lenet5") {
    // benchmarks/mnist/mnist_data_loader.py lines 11-13 and 18-20:
    // transforms.ToTensor() only, i.e. pixel / 255 without normalisation.
    b.g.input.shape = {1, 28, 28};
    b.g.input.pixel_scale = 1.0 / 255.0;
    b.g.input.mean = {0.0f};
    b.g.input.std = {1.0f};
    b.conv("features.0", "input", 1, 32, 5, 1, 0, 1, true, false, Act::Relu);
    b.pool("features.1", OpKind::MaxPool, 2, 2, 0);
    b.conv("features.2", b.last, 32, 64, 5, 1, 0, 1, true, false, Act::Relu);
    b.pool("features.3", OpKind::MaxPool, 2, 2, 0);
    b.simple("flatten", OpKind::Flatten);
    b.linear("classifier.0", "flatten", 1024, 512, true, false, Act::Relu);
    b.logits(b.linear("classifier.1", "classifier.0", 512, 10, true, false, Act::None));
  } else if (arch == "vgg7") {
    // benchmarks/cifar/cifar10_data_loader.py, transform_test (lines 25-32):
    // ToTensor (pixel / 255), Normalize((0.4914, 0.4822, 0.4465),
    // (0.2023, 0.1994, 0.2010)); the training transform (lines 15-24)
    // normalises the same way. Not the CIFAR-10 std usually quoted with
    // torchvision (0.2470, 0.2435, 0.2616): inputs normalised by the
    // reference reach -2.43 and 2.75, beyond that range's +/-2.13.
    b.g.input.shape = {3, 32, 32};
    b.g.input.pixel_scale = 1.0 / 255.0;
    b.g.input.mean = {0.4914f, 0.4822f, 0.4465f};
    b.g.input.std = {0.2023f, 0.1994f, 0.2010f};
    const int64_t widths[] = {128, 128, 0, 256, 256, 0, 512, 512, 0};
    int64_t cin = 3;
    for (int i = 0; i < 9; ++i) {
      const std::string name = "features." + std::to_string(i);
      if (widths[i] == 0) {
        b.pool(name, OpKind::MaxPool, 2, 2, 0);
      } else {
        b.conv(name, b.last, cin, widths[i], 3, 1, 1, 1, false, true, Act::Relu);
        cin = widths[i];
      }
    }
    b.simple("flatten", OpKind::Flatten);
    b.linear("classifier.0", "flatten", 8192, 1024, false, true, Act::Relu);
    b.logits(b.linear("classifier.1", "classifier.0", 1024, 10, true, false, Act::None));
  } else if (arch == "resnet18") {
    imagenet_input(b.g);
    b.conv("features.0", "input", 3, 64, 7, 2, 3, 1, false, true, Act::Relu);
    b.pool("features.1", OpKind::MaxPool, 3, 2, 1);
    int64_t cin = 64;
    const int64_t widths[] = {64, 128, 256, 512};
    for (int l = 0; l < 4; ++l) {
      for (int blk = 0; blk < 2; ++blk) {
        const std::string p = "features." + std::to_string(2 + l) + "." + std::to_string(blk);
        const int stride = (l > 0 && blk == 0) ? 2 : 1;
        const int64_t cout = widths[l];
        const std::string in = b.last;
        std::string shortcut = in;
        b.conv(p + ".features.0", in, cin, cout, 3, stride, 1, 1, false, true, Act::Relu);
        b.conv(p + ".features.1", p + ".features.0", cout, cout, 3, 1, 1, 1, false, true, Act::None);
        if (stride != 1 || cin != cout) {
          b.conv(p + ".downsample.0", in, cin, cout, 1, stride, 0, 1, false, true, Act::None);
          shortcut = p + ".downsample.0";
        }
        b.add(p, p + ".features.1", shortcut, Act::Relu);
        cin = cout;
      }
    }
    b.simple("avgpool", OpKind::GlobalAvgPool);
    b.simple("flatten", OpKind::Flatten);
    b.logits(b.linear("fc", "flatten", 512, 1000, true, false, Act::None));
  } else if (arch == "mobilenetv2") {
    imagenet_input(b.g);
    b.conv("features.0", "input", 3, 32, 3, 2, 1, 1, false, true, Act::Relu6);
    const int setting[7][4] = {{1, 16, 1, 1}, {6, 24, 2, 2}, {6, 32, 3, 2}, {6, 64, 4, 2},
                               {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
    int64_t cin = 32;
    int idx = 1;
    for (const auto& s : setting) {
      for (int i = 0; i < s[2]; ++i, ++idx) {
        const int stride = i == 0 ? s[3] : 1;
        const int64_t cout = s[1];
        const int64_t hidden = static_cast<int64_t>(std::lround(static_cast<double>(cin) * s[0]));
        const std::string p = "features." + std::to_string(idx);
        const std::string in = b.last;
        int k = 0;
        std::string cur = in;
        if (s[0] != 1) {
          b.conv(p + ".conv." + std::to_string(k++), cur, cin, hidden, 1, 1, 0, 1, false, true, Act::Relu6);
          cur = b.last;
        }
        b.conv(p + ".conv." + std::to_string(k++), cur, hidden, hidden, 3, stride, 1, static_cast<int>(hidden), false,
               true, Act::Relu6);
        cur = b.last;
        b.conv(p + ".conv." + std::to_string(k++), cur, hidden, cout, 1, 1, 0, 1, false, true, Act::None);
        if (stride == 1 && cin == cout) b.add(p, in, b.last, Act::None);
        cin = cout;
      }
    }
    b.conv("features.18", b.last, cin, 1280, 1, 1, 0, 1, false, true, Act::Relu6);
    b.simple("features.19", OpKind::GlobalAvgPool);
    b.simple("flatten", OpKind::Flatten);
    b.logits(b.linear("classifier.1", "flatten", 1280, 1000, true, false, Act::None));
  } else {
    throw ConvertError("unknown architecture '" + arch + "' (lenet5, vgg7, resnet18, mobilenetv2)");
  }
  return b.g;
}

float default_input_x_max(const InputSpec& in) {
  float m = 0.0f;
  for (size_t c = 0; c < in.mean.size(); ++c) {
    const float lo = (0.0f - in.mean[c]) / in.std[c];
    const float hi = (255.0f * static_cast<float>(in.pixel_scale) - in.mean[c]) / in.std[c];
    m = std::max({m, std::fabs(lo), std::fabs(hi)});
  }
  return m > 0.0f ? m : 1.0f;
}

}  // namespace bbits::converter
