"""Module machinery against torch: names, order, state_dict, loading, repr, modes.

The same architecture is built in both libraries (``make_net(torch)`` and
``make_net(ember)``) and every listing is compared with torch's.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn as tnn

import ember
import ember.nn as nn


def lib_nn(lib):
    return tnn if lib is torch else nn


def make_net(lib):
    L = lib_nn(lib)

    class Block(L.Module):
        def __init__(self):
            super().__init__()
            self.fc = L.Linear(4, 4)
            self.norm = L.BatchNorm1d(4)
            self.register_buffer("scale", lib.ones(4), persistent=False)
            self.register_buffer("offset", lib.zeros(4))

        def forward(self, x):
            return (self.norm(self.fc(x)) * self.scale + self.offset).relu()

    class Net(L.Module):
        def __init__(self):
            super().__init__()
            self.embed = L.Linear(3, 4)
            self.blocks = L.ModuleList([Block(), Block()])
            self.heads = L.ModuleDict({"a": L.Linear(4, 2), "b": L.Sequential(
                L.Linear(4, 4), L.Tanh(), L.Linear(4, 2))})
            self.out = L.Sequential(OrderedDict([("drop", L.Dropout(0.1)),
                                                 ("proj", L.Linear(2, 2, bias=False))]))
            self.again = self.embed  # the same module twice: listed once
            self.gain = L.Parameter(lib.ones(1))
            self.register_parameter("unused", None)

        def forward(self, x):
            h = self.embed(x)
            for block in self.blocks:
                h = block(h)
            return self.out(self.heads["a"](h) + self.heads["b"](h)) * self.gain

    return Net()


@pytest.fixture
def nets():
    return make_net(torch), make_net(ember)


def names(pairs):
    return [name for name, _ in pairs]


def test_listings_match_torch(nets):
    t_net, e_net = nets
    assert names(e_net.named_parameters()) == names(t_net.named_parameters())
    assert names(e_net.named_buffers()) == names(t_net.named_buffers())
    assert names(e_net.named_modules()) == names(t_net.named_modules())
    assert names(e_net.named_children()) == names(t_net.named_children())
    assert list(e_net.state_dict()) == list(t_net.state_dict())
    assert len(list(e_net.parameters())) == len(list(t_net.parameters()))
    assert len(list(e_net.modules())) == len(list(t_net.modules()))
    assert len(list(e_net.buffers())) == len(list(t_net.buffers()))
    assert [n for n, _ in e_net.named_parameters(remove_duplicate=False)] == \
        [n for n, _ in t_net.named_parameters(remove_duplicate=False)]
    assert names(e_net.named_parameters(prefix="m", recurse=False)) == \
        names(t_net.named_parameters(prefix="m", recurse=False))


def test_repr_matches_torch(nets):
    t_net, e_net = nets
    assert repr(e_net) == repr(t_net)
    assert repr(e_net.blocks[1:]) == repr(t_net.blocks[1:])


def test_repr_of_containers_matches_torch():
    def build(L):
        return L.Sequential(L.ModuleList([L.Linear(2, 2), L.Linear(2, 2), L.ReLU(),
                                          L.Linear(2, 2)]),
                            L.ModuleDict({"x": L.GELU("tanh"), "y": L.Softplus(2.0, 5.0)}),
                            L.Sequential(), L.ModuleList(), L.Flatten(), L.Unflatten(1, (2, 2)),
                            L.Embedding(9, 3, padding_idx=-1), L.LayerNorm([2, 3]),
                            L.LeakyReLU(0.2, inplace=True), L.ELU(), L.Hardtanh(), L.ReLU6(),
                            L.Softmax(dim=-1), L.LogSoftmax(1), L.AlphaDropout(0.3),
                            L.BatchNorm1d(3, momentum=None, affine=False), L.SELU(), L.SiLU(),
                            L.Sigmoid(), L.Identity(), L.Bilinear(2, 3, 4), L.BatchNorm2d(5),
                            L.LogSigmoid(), L.ReLU(inplace=True))
    assert repr(build(nn)) == repr(build(tnn))


def test_state_dict_loads_torch_weights_and_gives_torch_outputs(nets):
    t_net, e_net = nets
    t_net.double()
    e_net.double()
    result = e_net.load_state_dict({k: v.numpy() for k, v in t_net.state_dict().items()})
    assert repr(result) == "<All keys matched successfully>"
    x = np.random.default_rng(0).normal(size=(5, 3))
    t_net.eval()
    e_net.eval()
    expected = t_net(torch.tensor(x)).detach().numpy()
    np.testing.assert_allclose(e_net(ember.tensor(x, dtype=ember.float64)).array, expected,
                               rtol=1e-10, atol=1e-12)


def test_state_dict_values_share_memory_and_keep_vars():
    layer = nn.Linear(2, 2)
    state = layer.state_dict()
    assert not isinstance(state["weight"], nn.Parameter)
    state["weight"].array[0, 0] = 42.0
    assert layer.weight.array[0, 0] == 42.0
    assert layer.state_dict(keep_vars=True)["weight"] is layer.weight


def _torch_error(t_net, state, strict=True):
    with pytest.raises(RuntimeError) as err:
        t_net.load_state_dict({k: torch.tensor(v) for k, v in state.items()}, strict=strict)
    return str(err.value)


def test_load_state_dict_reports_missing_unexpected_and_mismatched_by_name(nets):
    t_net, e_net = nets
    state = {k: v.numpy().copy() for k, v in t_net.state_dict().items()}
    del state["blocks.0.fc.bias"], state["heads.b.2.weight"]
    state["blocks.1.extra"] = np.zeros(3)
    state["embed.weight"] = np.zeros((5, 3))
    with pytest.raises(RuntimeError) as err:
        e_net.load_state_dict(state)
    message, expected = str(err.value), _torch_error(t_net, state)
    assert message.split("\n\t")[:3] == expected.split("\n\t")[:3]  # header, missing, unexpected
    assert "size mismatch for embed.weight: copying a param with shape (5, 3)" in message
    assert "the shape in current model is (4, 3)" in message


def test_load_state_dict_not_strict_returns_keys_but_still_refuses_shapes(nets):
    _, e_net = nets
    state = {k: v.array.copy() for k, v in e_net.state_dict().items()}
    del state["gain"]
    state["surplus"] = np.ones(2)
    state["heads.a.bias"] = state["heads.a.bias"] + 1
    result = e_net.load_state_dict(state, strict=False)
    assert result.missing_keys == ["gain"] and result.unexpected_keys == ["surplus"]
    np.testing.assert_array_equal(e_net.heads["a"].bias.array, state["heads.a.bias"])
    state["out.proj.weight"] = np.zeros((2, 3))
    before = e_net.embed.weight.array.copy()
    state["embed.weight"] = before + 1
    with pytest.raises(RuntimeError, match="size mismatch for out.proj.weight"):
        e_net.load_state_dict(state, strict=False)
    np.testing.assert_array_equal(e_net.embed.weight.array, before)  # nothing was copied


def test_load_state_dict_accepts_ember_tensors_and_rejects_junk():
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a.weight.array, b.weight.array)
    assert b.weight is not a.weight and b.weight.array is not a.weight.array
    with pytest.raises(RuntimeError, match='parameter named "bias"'):
        b.load_state_dict({"weight": a.weight.detach(), "bias": "junk"})
    with pytest.raises(TypeError, match="dict-like"):
        b.load_state_dict([1, 2])


def test_train_eval_propagate_and_apply(nets):
    _, e_net = nets
    assert e_net.training and all(m.training for m in e_net.modules())
    assert e_net.eval() is e_net
    assert not any(m.training for m in e_net.modules())
    e_net.train()
    assert all(m.training for m in e_net.modules())
    with pytest.raises(ValueError, match="boolean"):
        e_net.train("yes")
    visited, t_visited = [], []
    e_net.apply(lambda m: visited.append(type(m).__name__))
    make_net(torch).apply(lambda m: t_visited.append(type(m).__name__))
    assert visited == t_visited and visited[-1] == "Net"

    def constant_linear(m):
        if isinstance(m, nn.Linear):
            nn.init.constant_(m.weight, 0.5)
    e_net.apply(constant_linear)
    assert all(np.all(m.weight.array == 0.5) for m in e_net.modules() if isinstance(m, nn.Linear))


def test_zero_grad_and_requires_grad(nets):
    _, e_net = nets
    e_net(ember.randn(6, 3)).sum().backward()
    params = list(e_net.parameters())
    assert all(p.grad is not None for p in params)
    e_net.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.array.any() for p in params)
    e_net.zero_grad()
    assert all(p.grad is None for p in params)
    e_net.requires_grad_(False)
    assert not any(p.requires_grad for p in params)


def test_casts_keep_the_same_objects():
    bn = nn.BatchNorm1d(3)
    weight, mean = bn.weight, bn.running_mean
    bn.double()
    assert bn.weight is weight and bn.weight.dtype == ember.float64
    assert bn.running_mean is mean and mean.dtype == ember.float64
    assert bn.num_batches_tracked.dtype == ember.int64
    assert bn.to(ember.float32).weight.dtype == ember.float32
    assert bn.float().running_var.dtype == ember.float32


def test_buffers_and_registration_rules():
    m = nn.Module()
    m.register_buffer("stat", ember.zeros(2))
    m.register_buffer("tmp", ember.ones(1), persistent=False)
    m.register_buffer("nothing", None)
    assert names(m.named_buffers()) == ["stat", "tmp"] and list(m.state_dict()) == ["stat"]
    m.stat = ember.ones(2)  # assigning a tensor to a buffer's name replaces the buffer
    np.testing.assert_array_equal(m.state_dict()["stat"].array, [1.0, 1.0])
    with pytest.raises(KeyError, match=r'contain "\.", got "a\.b"'):
        m.register_buffer("a.b", ember.zeros(1))
    with pytest.raises(KeyError, match="already exists"):
        m.register_parameter("stat", nn.Parameter(ember.zeros(1)))
    with pytest.raises(TypeError, match="buffer"):
        m.register_buffer("bad", np.zeros(2))
    m.w = nn.Parameter(ember.zeros(2))
    with pytest.raises(TypeError, match="as parameter 'w'"):
        m.w = ember.zeros(2)
    del m.w
    assert "w" not in dict(m.named_parameters())

    class Forgetful(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(2, 2)
    with pytest.raises(AttributeError, match="before Module.__init__"):
        Forgetful()
    with pytest.raises(NotImplementedError, match='missing the required "forward"'):
        nn.Module()(1)
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        _ = m.nope


def test_tied_weights_are_listed_once_like_torch():
    def build(L):
        model = L.Sequential(L.Linear(3, 3), L.Linear(3, 3))
        model[1].weight = model[0].weight
        return model
    t, e = build(tnn), build(nn)
    assert names(e.named_parameters()) == names(t.named_parameters())
    assert list(e.state_dict()) == list(t.state_dict())


def test_parameter():
    data = ember.zeros(2, dtype=ember.float64)
    p = nn.Parameter(data)
    assert isinstance(p, ember.Tensor) and p.requires_grad and p.is_leaf
    assert p.dtype == ember.float64 and p.array is data.array  # shares memory, keeps dtype
    assert repr(p) == "Parameter containing:\ntensor([0., 0.], dtype=ember.float64, " \
                      "requires_grad=True)"
    assert repr(nn.Parameter(torch.ones(1).numpy())).startswith("Parameter containing:\ntensor")
    assert not nn.Parameter(ember.ones(1), requires_grad=False).requires_grad
    with pytest.raises(RuntimeError, match="floating point"):
        nn.Parameter(ember.tensor([1, 2]))


# ---------------------------------------------------------------- containers
def test_sequential_indexing_slicing_and_editing_like_torch():
    def build(L):
        return L.Sequential(L.Linear(2, 3), L.ReLU(), L.Linear(3, 4), L.Tanh())
    t, e = build(tnn), build(nn)
    assert repr(e[-1]) == repr(t[-1]) and repr(e[0]) == repr(t[0])
    assert isinstance(e[1:3], nn.Sequential) and repr(e[1:3]) == repr(t[1:3])
    assert len(e) == 4 and [type(m).__name__ for m in e] == ["Linear", "ReLU", "Linear", "Tanh"]
    for model, L in ((t, tnn), (e, nn)):
        del model[1]
        model.append(L.Sigmoid())
        model.insert(-1, L.GELU())
        model[0] = L.Linear(2, 3, bias=False)
    assert repr(e) == repr(t)
    with pytest.raises(IndexError, match="out of range"):
        e[10]
    named = nn.Sequential(OrderedDict([("a", nn.ReLU()), ("b", nn.Tanh())]))
    assert list(named[1:]._modules) == ["b"] and isinstance(named.b, nn.Tanh)


def test_sequential_forward_chains():
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    x = ember.randn(4, 2)
    expected = model[2](model[1](model[0](x)))
    np.testing.assert_array_equal(model(x).array, expected.array)


def test_module_list_and_dict_like_torch():
    def build(L):
        layers = L.ModuleList([L.Linear(2, 2)])
        layers.extend([L.Linear(2, 2), L.ReLU()])
        layers.append(L.Linear(2, 2))
        layers.insert(1, L.Tanh())
        layers += [L.Sigmoid()]
        del layers[0]
        heads = L.ModuleDict({"x": L.Linear(2, 1)})
        heads["y"] = L.ReLU()
        heads.update({"z": L.Tanh()})
        heads.pop("x")
        return L.Sequential(layers, heads, layers[1:3])
    t, e = build(tnn), build(nn)
    assert repr(e) == repr(t)
    assert names(e.named_parameters()) == names(t.named_parameters())
    assert "y" in e[1] and list(e[1].keys()) == ["y", "z"] and len(e[1]) == 2
    assert isinstance(e[0][-1], nn.Sigmoid) and len(e[0]) == len(t[0]) == 5


def test_get_submodule():
    net = make_net(ember)
    assert net.get_submodule("heads.b.2") is net.heads["b"][2]
    with pytest.raises(AttributeError, match="has no attribute `zz`"):
        net.get_submodule("blocks.zz")


# ---------------------------------------------------------------- training round trip
def _mlp(L):
    return L.Sequential(L.Linear(4, 16), L.Tanh(), L.Linear(16, 16), L.ReLU(), L.Linear(16, 3))


def _sgd_step(params, lr, no_grad):
    with no_grad():
        for p in params:
            p -= lr * p.grad
            p.grad = None


def test_three_sgd_steps_match_torch_and_state_dict_round_trips():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 4)), rng.integers(0, 3, 32)
    t_model, e_model = _mlp(tnn).double(), _mlp(nn).double()
    e_model.load_state_dict({k: v.numpy() for k, v in t_model.state_dict().items()})
    for _ in range(3):
        t_loss = tnn.functional.cross_entropy(t_model(torch.tensor(x)), torch.tensor(y))
        e_loss = nn.functional.cross_entropy(e_model(ember.tensor(x, dtype=ember.float64)),
                                             ember.tensor(y))
        np.testing.assert_allclose(e_loss.item(), t_loss.item(), rtol=1e-10)
        t_loss.backward()
        e_loss.backward()
        _sgd_step(list(t_model.parameters()), 0.5, torch.no_grad)
        _sgd_step(list(e_model.parameters()), 0.5, ember.no_grad)
    for name, value in t_model.state_dict().items():
        np.testing.assert_allclose(e_model.state_dict()[name].array, value.numpy(), rtol=1e-9)
    saved = {k: v.array.copy() for k, v in e_model.state_dict().items()}
    fresh = _mlp(nn).double()
    fresh.load_state_dict(saved)
    xe = ember.tensor(x, dtype=ember.float64)
    np.testing.assert_array_equal(fresh(xe).array, e_model(xe).array)


def test_deepcopy_gives_an_independent_equal_model():
    import copy
    model = _mlp(nn)
    clone = copy.deepcopy(model)
    x = ember.randn(2, 4)
    np.testing.assert_array_equal(clone(x).array, model(x).array)
    assert isinstance(clone[0].weight, nn.Parameter) and clone[0].weight is not model[0].weight
    with ember.no_grad():
        clone[0].weight.fill_(0.0)
    assert model[0].weight.array.any()


def test_registered_names_read_from_the_stores_and_never_go_stale():
    # Module gives each registered name a class-level reader (module._Registered), so
    # `layer.weight` skips a failed lookup; it must answer as the stores do, always
    layer = nn.Linear(3, 2)
    assert layer.weight is layer._parameters["weight"] and "weight" not in vars(layer)
    replacement = nn.Parameter(ember.zeros(2, 3))
    layer._parameters["weight"] = replacement  # an edit behind the reader's back
    assert layer.weight is replacement
    layer.bias = None
    assert layer.bias is None and layer._parameters["bias"] is None
    del layer.weight
    with pytest.raises(AttributeError, match="'Linear' object has no attribute 'weight'"):
        _ = layer.weight
    with pytest.raises(AttributeError, match="type object 'Linear' has no attribute"):
        _ = nn.Linear.weight  # as in torch: the class has no such attribute
    other = nn.Linear(3, 2)
    assert other.weight.shape == (2, 3)  # the deletion was this instance's only

    class Holder(nn.Module):
        def __init__(self, kind):
            super().__init__()
            if kind == "module":
                self.part = nn.ReLU()
            elif kind == "buffer":
                self.register_buffer("part", ember.ones(1))
            else:
                self.part = "a plain attribute"  # wins over the class-level reader
    assert isinstance(Holder("module").part, nn.ReLU)
    assert Holder("buffer").part.tolist() == [1.0]
    assert Holder("plain").part == "a plain attribute"
    swapped = Holder("module")
    swapped.part = nn.Parameter(ember.zeros(1))  # a module replaced by a parameter
    assert isinstance(swapped.part, nn.Parameter) and "part" not in swapped._modules
    bare = nn.Module()
    bare.fc = nn.Linear(1, 1)
    assert bare.fc is bare._modules["fc"] and "fc" not in vars(nn.Module)
