"""PyTorch references for the losses (kernels/losses.h): cross-entropy with ignore_index=-1
(some rows ignored), poisson_nll_loss (log_input False and True, full=False, eps=1e-8) and
mse_loss; each saves the loss and the gradients of (g * loss) for an upstream scalar g."""
import torch
import torch.nn.functional as F


def generate(new_case):
    torch.manual_seed(102)
    g = torch.tensor([0.75])

    logits = (torch.randn(12, 10) * 2).requires_grad_()
    labels = torch.randint(0, 10, (12,))
    labels[[1, 4, 5, 9]] = -1
    loss = F.cross_entropy(logits, labels, ignore_index=-1)
    (g * loss).sum().backward()
    new_case("ce_ignore").save(logits=logits, labels=labels, g=g, loss=loss.reshape(1),
                               grad_logits=logits.grad)

    for name, log_input in (("poisson_log_false", False), ("poisson_log_true", True)):
        if log_input:
            pred = torch.randn(4, 3, 5)
        else:
            pred = torch.rand(4, 3, 5) * 3 + 0.05
        pred.requires_grad_()
        target = torch.poisson(torch.rand(4, 3, 5) * 4)
        loss = F.poisson_nll_loss(pred, target, log_input=log_input, full=False, eps=1e-8)
        (g * loss).sum().backward()
        new_case(name).save(pred=pred, target=target, g=g, loss=loss.reshape(1),
                            grad_pred=pred.grad)

    pred = torch.randn(3, 4, 5, requires_grad=True)
    target = torch.randn(3, 4, 5, requires_grad=True)
    loss = F.mse_loss(pred, target)
    (g * loss).sum().backward()
    new_case("mse").save(pred=pred, target=target, g=g, loss=loss.reshape(1),
                         grad_pred=pred.grad, grad_target=target.grad)
    return 4
