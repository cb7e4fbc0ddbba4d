# Random tiny models + random PEFT LoRA configs: adapter dirs, ids, logits (eval), merged logits,
# and the step-0 gradients of every LoRA parameter (train mode, dropout 0). Not a fixture: a sweep.
import json, os, random, sys, torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

out = sys.argv[1]; n = int(sys.argv[2]); seed0 = int(sys.argv[3]) if len(sys.argv) > 3 else 0
BIG = os.environ.get("BIG") == "1"  # GPT-2 124M-like widths and 70-130 positions: the kernels' block paths
for case in range(n):
    seed = seed0 + case
    rnd = random.Random(seed); torch.manual_seed(seed)
    arch = rnd.choice(["gpt2", "llama", "mistral", "qwen2", "qwen3"])
    V = rnd.choice([61, 128, 203])
    if arch == "gpt2":
        heads = rnd.choice([8, 12]) if BIG else rnd.choice([2, 4]); C = heads * (64 if BIG else rnd.choice([8, 16]))
        cfg = GPT2Config(n_embd=C, n_head=heads, n_layer=rnd.choice([1, 2, 3]), vocab_size=V, n_positions=256 if BIG else 32,
                         layer_norm_epsilon=rnd.choice([1e-5, 1e-6]), activation_function=rnd.choice(["gelu_new", "gelu_pytorch_tanh", "gelu", "relu", "silu"]),
                         scale_attn_by_inverse_layer_idx=rnd.random() < 0.3, n_inner=rnd.choice([None, 3 * C]),
                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=rnd.random() < 0.7)
        linears = ["c_attn", "c_proj", "c_fc"]
    else:
        heads = rnd.choice([8, 9]) if BIG else rnd.choice([2, 4]); kv = rnd.choice([h for h in [1, 2, 3, 4] if heads % h == 0])
        hd = rnd.choice([64, 128]) if BIG else rnd.choice([8, 16]); hidden = rnd.choice([512, 576]) if BIG else rnd.choice([32, 48])
        kw = dict(vocab_size=V, hidden_size=hidden, intermediate_size=rnd.choice([1536, 1000]) if BIG else rnd.choice([40, 64]), num_hidden_layers=rnd.choice([1, 2, 3]),
                  num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=256 if BIG else 64,
                  rope_theta=rnd.choice([10000.0, 500.0]), rms_norm_eps=rnd.choice([1e-5, 1e-6]),
                  tie_word_embeddings=rnd.random() < 0.5)
        if arch in ("llama", "qwen3", "mistral"): kw["head_dim"] = hd
        if arch == "llama":
            kw["attention_bias"] = rnd.random() < 0.4
            kw["mlp_bias"] = rnd.random() < 0.3
            sc = rnd.choice([None, "linear", "llama3", "yarn"])
            if sc == "yarn": kw["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, **({"beta_fast": 8.0} if rnd.random() < 0.5 else {})}
            if sc == "linear": kw["rope_scaling"] = {"rope_type": "linear", "factor": 2.0}
            if sc == "llama3": kw["rope_scaling"] = {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
            cfg = LlamaConfig(**kw)
        elif arch == "mistral": cfg = MistralConfig(sliding_window=rnd.choice([None, 5]), **kw)
        win = dict(use_sliding_window=True, sliding_window=4, max_window_layers=rnd.randint(0, kw["num_hidden_layers"])) if rnd.random() < 0.3 else {}
        if arch in ("qwen2", "qwen3") and rnd.random() < 0.3: kw["rope_scaling"] = {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 8, "rope_theta": kw["rope_theta"]}
        if arch == "qwen2": cfg = Qwen2Config(**kw, **win)
        else: cfg = Qwen3Config(**{**kw, "attention_bias": rnd.random() < 0.3}, **win)
        linears = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    cfg._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float().eval()
    d = os.path.join(out, f"case{seed}"); base = os.path.join(d, "base"); os.makedirs(base, exist_ok=True)
    model.save_pretrained(base, safe_serialization=True)
    # the LoRA config
    r = rnd.choice([1, 2, 3, 8]); L = cfg.num_hidden_layers if arch != "gpt2" else cfg.n_layer
    tm_kind = rnd.choice(["list", "all-linear", "regex", "none"]) if arch != "gpt2" else rnd.choice(["list", "regex", "list"])
    lc = dict(r=r, lora_alpha=rnd.choice([1, 4, 16, 7.5]), lora_dropout=0.0, task_type="CAUSAL_LM",
              use_rslora=rnd.random() < 0.3, bias=rnd.choice(["none", "none", "all", "lora_only"]),
              fan_in_fan_out=arch == "gpt2", init_lora_weights=rnd.choice([True, "gaussian", False]))
    if tm_kind == "list": lc["target_modules"] = rnd.sample(linears, rnd.randint(1, len(linears)))
    elif tm_kind == "all-linear": lc["target_modules"] = "all-linear"
    elif tm_kind == "regex": lc["target_modules"] = r".*\.(%s)" % "|".join(rnd.sample(linears, 2))
    if tm_kind == "list" and L > 1 and rnd.random() < 0.4:
        lc["layers_to_transform"] = sorted(rnd.sample(range(L), rnd.randint(1, L - 1)))
        lc["layers_pattern"] = "h" if arch == "gpt2" else "layers"
    layer_path = "transformer.h" if arch == "gpt2" else "model.layers"
    if tm_kind == "list" and rnd.random() < 0.3:  # a full module path among the names
        lc["target_modules"] = lc["target_modules"] + [f"{layer_path}.0.{'attn' if arch == 'gpt2' else 'self_attn'}.{'c_proj' if arch == 'gpt2' else 'o_proj'}"]
    if rnd.random() < 0.3:
        key = rnd.choice(linears); lc["rank_pattern"] = {key: rnd.choice([2, 5])}
        if rnd.random() < 0.5: lc["rank_pattern"] = {rf"{layer_path}\.0\..*\.{key}": 5}  # a regex over the full path
    if rnd.random() < 0.3:
        key = rnd.choice(linears); lc["alpha_pattern"] = {key: rnd.choice([3, 10])}
    if rnd.random() < 0.25: lc["use_dora"] = True; lc["bias"] = "none"
    elif rnd.random() < 0.2: lc["lora_bias"] = True
    if tm_kind == "list" and rnd.random() < float(os.environ.get("P_HEAD", "0.3")):
        lc["target_modules"] = lc["target_modules"] + [rnd.choice(["wte", "lm_head"] if arch == "gpt2" else ["embed_tokens", "lm_head"])]
    if tm_kind in ("all-linear", "none") and rnd.random() < 0.4:
        lc["exclude_modules"] = rnd.sample(linears, 1) if rnd.random() < 0.5 else r".*\.0\..*"
    if lc.get("use_dora") and any(t in ("wte", "embed_tokens") for t in lc.get("target_modules") or []): lc["use_dora"] = False
    if rnd.random() < float(os.environ.get("P_SAVE", "0.2")): lc["modules_to_save"] = [rnd.choice(["lm_head", "wte" if arch == "gpt2" else "embed_tokens"])]
    try:
        peft = get_peft_model(model, LoraConfig(**lc))
    except Exception as e:
        print(f"case{seed}: PEFT refused {lc}: {e}"); continue
    second = None
    if not lc.get("modules_to_save") and rnd.random() < float(os.environ.get("P_TWO", "0.25")):
        second = dict(r=rnd.choice([1, 2, 5]), lora_alpha=rnd.choice([2, 9]), lora_dropout=0.0, task_type="CAUSAL_LM",
                      fan_in_fan_out=arch == "gpt2", target_modules=rnd.sample(linears, rnd.randint(1, 2)), use_rslora=rnd.random() < 0.5)
        peft.add_adapter("other", LoraConfig(**second))
        peft.base_model.set_adapter(["default", "other"])
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name or "lora_A" in name or "lora_magnitude" in name: p.add_(torch.randn_like(p) * 0.3)
            elif p.requires_grad: p.add_(torch.randn_like(p) * 0.05)
    T = rnd.choice([70, 130]) if BIG else rnd.choice([7, 12]); B = rnd.choice([1, 2])
    ids = torch.randint(0, V, (B, T))
    peft.eval()
    with torch.no_grad(): logits = peft(input_ids=ids).logits
    peft.train()
    loss = peft(input_ids=ids, labels=ids).loss; loss.backward()
    grads = {n: p.grad.detach().clone().contiguous() for n, p in peft.named_parameters() if p.requires_grad and p.grad is not None}
    peft.save_pretrained(os.path.join(d, "adapter"))
    with torch.no_grad():  # greedy decoding from the first row's first 4 tokens, EOS ignored
        gen = peft.generate(input_ids=ids[:1, :4], attention_mask=torch.ones(1, 4, dtype=torch.long), max_new_tokens=6, do_sample=False,
                            output_scores=True, return_dict_in_generate=True, eos_token_id=None, pad_token_id=0)
    greedy = gen.sequences[0, 4:].tolist()
    gaps = [float(x.topk(2).values[0, 0] - x.topk(2).values[0, 1]) for x in gen.scores]
    peft.eval()
    tensors = {"logits": logits.contiguous(), "loss": loss.detach().reshape(1)}
    try:
        merged = peft.merge_and_unload()
        with torch.no_grad(): tensors["merged_logits"] = merged(input_ids=ids).logits.contiguous()
    except RuntimeError as e:
        print(f"case{seed}: merge refused: {e}")
    for n, g in grads.items(): tensors["grad:" + n] = g
    save_file(tensors, os.path.join(d, "ref.safetensors"))
    json.dump({"arch": arch, "lora": {k: v for k, v in lc.items()}, "second": second, "ids": ids.tolist(), "greedy": greedy, "gaps": gaps},
              open(os.path.join(d, "case.json"), "w"))
    print(f"case{seed}: {arch} L={L} {lc} second={second}")
