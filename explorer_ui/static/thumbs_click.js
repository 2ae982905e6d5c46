element.addEventListener('click', (event) => {
  const figure = event.target.closest('[data-latent]');
  if (figure) trigger('click', {latent: Number(figure.dataset.latent)});
});
